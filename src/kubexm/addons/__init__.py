"""Cluster addons kubexm installs after the control plane: network plugin, NodeLocal DNSCache, storage.

Each is an ``AddonRelease``: a manifest kubexm renders (validated against Kubernetes' schemas in the tests)
or a Helm chart with values kubexm computes from the cluster file.
"""
