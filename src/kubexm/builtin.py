"""Registers kubexm's own pipelines (and through them, their modules and tasks)."""

from __future__ import annotations

from kubexm.engine.registry import Registry


def register(registry: Registry) -> None:
    from kubexm.pipelines.builtin import ALL

    for pipeline in ALL:
        registry.add_pipeline(pipeline)
