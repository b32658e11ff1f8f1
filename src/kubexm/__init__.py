"""kubexm: create and operate Kubernetes clusters on machines reached over SSH."""

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    # Read on first use: importlib.metadata costs ~40 ms at start-up, which every command would pay.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("kubexm")
        except PackageNotFoundError:  # running from a source tree without install
            value = "0.0.0+src"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module 'kubexm' has no attribute {name!r}")
