"""Pipelines: the ordered modules behind each user intent. ``builtin.ALL`` is what the registry loads;
importing this package alone loads none of them (``kubexm run command`` needs only ``adhoc``)."""
