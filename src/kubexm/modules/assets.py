"""AssetsModule: release files relayed node to node ahead of the installs that need them (spec.assets.relay)."""

from __future__ import annotations

from kubexm.engine import Module, Task, deploy_machine
from kubexm.steps.binaries import RelayAssets

DistributeAssets = Task(
    "DistributeAssets", steps=[RelayAssets()], hosts=deploy_machine(),
    # "always": it serves whichever installs --tags selected, and only those; `--skip-tags assets` skips it.
    tags=frozenset({"assets", "always"}), when=lambda c: c.spec.assets.relay,
    description="release files the selected installs need, sent to two nodes that pass them on (checksums per hop)",
)

AssetsModule = Module("AssetsModule", tasks=[DistributeAssets], tags=frozenset({"assets"}),
                      description="release files relayed node to node (spec.assets.relay)")
