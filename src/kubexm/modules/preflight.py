"""PreflightModule: greet, then check every host before anything is changed."""

from __future__ import annotations

from kubexm.engine import Module, Task, all_hosts, deploy_machine
from kubexm.steps.preflight import CheckDeployMachine, CheckHost, Greeting, LintClusterSpec, PreflightReport

GreetingTask = Task(
    "Greeting", steps=[Greeting()], hosts=deploy_machine(), tags=frozenset({"preflight", "always"}),
    description="show the version, the cluster and what will be deployed",
)

LintTask = Task(
    "LintClusterSpec", steps=[LintClusterSpec(), CheckDeployMachine()], hosts=deploy_machine(), tags=frozenset({"preflight"}),
    description="cross-check the cluster file and this machine's limits for the fleet",
)

PreflightChecks = Task(
    "PreflightChecks", steps=[CheckHost()], hosts=all_hosts(), tags=frozenset({"preflight", "always"}),
    then=[PreflightReport()], then_on=deploy_machine(),
    # Every host is checked even when one fails, so the table shows the whole picture.
    on_failure="continue",
    description="check OS, resources, commands, free ports, clock and reachability on every host",
)

PreflightModule = Module(
    "PreflightModule", tasks=[GreetingTask, LintTask, PreflightChecks], tags=frozenset({"preflight"}),
    description="greet and check every host before changing anything",
)
