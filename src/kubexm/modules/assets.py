"""AssetsModule: release files relayed node to node ahead of the installs that need them (spec.assets.relay)."""

from __future__ import annotations

from collections.abc import Callable

from kubexm.engine import Module, Pipeline, Task, deploy_machine
from kubexm.steps.binaries import RelayAssets


def assets_module(pipeline: Callable[[], Pipeline]) -> Module:
    """The module for ``pipeline`` (given lazily: the module is one of its own parts)."""
    relay = Task(
        "DistributeAssets", steps=[RelayAssets(pipeline)], hosts=deploy_machine(),
        # "always": it serves whichever installs --tags selected, and only those; `--skip-tags assets` skips it.
        tags=frozenset({"assets", "always"}), when=lambda c: c.spec.assets.relay,
        description="release files every node needs, sent to two nodes that pass them on (checksums per hop)",
    )
    return Module("AssetsModule", tasks=[relay], tags=frozenset({"assets"}),
                  description="release files relayed node to node (spec.assets.relay)")
