"""Ad-hoc work on hosts: ``kubexm run command``."""

from __future__ import annotations

from kubexm.engine import HostContext, Module, Pipeline, Step, Task, all_hosts
from kubexm.steps.common import Command


def _command_steps(host: HostContext) -> list[Step]:
    extra = host.run_ctx.options.extra
    return [Command(extra["command"], sudo=extra.get("sudo", True), timeout=extra.get("timeout"))]


RunCommandTask = Task(
    "RunCommand", steps=_command_steps, hosts=all_hosts(), tags=frozenset({"adhoc"}),
    description="run one shell command on the selected hosts", on_failure="continue",
)
AdhocModule = Module("AdhocModule", tasks=[RunCommandTask], description="ad-hoc commands")
RUN_COMMAND = Pipeline("RunCommandPipeline", modules=[AdhocModule],
                       description="run a shell command on many hosts in parallel")
