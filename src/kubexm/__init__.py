"""kubexm: create and operate Kubernetes clusters on machines reached over SSH."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kubexm")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
