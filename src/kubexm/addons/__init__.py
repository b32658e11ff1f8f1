"""Cluster addons kubexm installs after the control plane: network plugin, NodeLocal DNSCache, storage.

Each is an ``AddonRelease`` (``release.py``): a multi-document manifest kubexm renders (Flannel,
NodeLocal DNSCache, local-path; validated against Kubernetes' schemas in the tests) or a Helm chart with
values kubexm computes from the cluster file (Calico, Cilium, NFS, OpenEBS, Longhorn). ``images.py``
points every image at the private registry when the cluster file names one.
"""
