"""Modules: the tasks of one component, enabled or not by the cluster spec."""
