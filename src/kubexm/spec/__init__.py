"""The cluster file: models, loading with located errors, cross-field validation, samples."""

from kubexm.spec.dump import dump_cluster
from kubexm.spec.loader import load_cluster, parse_cluster
from kubexm.spec.models import Cluster, Host
from kubexm.spec.validate import validate_cluster

__all__ = ["Cluster", "Host", "dump_cluster", "load_cluster", "parse_cluster", "validate_cluster"]
