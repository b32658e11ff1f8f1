"""Certificate pipelines: `certs check` (read every node, judge locally), `certs renew` (re-issue, place,
restart one node at a time) and `certs rotate-ca` (the phased CA rotation)."""

from __future__ import annotations

from kubexm.engine import SERIAL, Module, Pipeline, Task, deploy_machine, first, role
from kubexm.engine.context import HostContext, RunContext
from kubexm.engine.selectors import Selector
from kubexm.engine.step import Step
from kubexm.pki import rotation as rot
from kubexm.pki.inventory import node_inventory
from kubexm.spec.models import Cluster
from kubexm.steps.ca_rotate import (
    PASSES,
    BeginCARotation,
    EnterCAPhase,
    FinishCARotation,
    RequireHealthyEtcd,
    RotateNodeCA,
    component_of,
)
from kubexm.steps.cert_renew import FinishRenewal, ReissueLeaves, RenewalPlan, RenewNodeCerts
from kubexm.steps.certs import CertsReport, CollectCerts
from kubexm.steps.etcd import cluster_pki

TAGS = frozenset({"certs"})


def cert_hosts() -> Selector:
    """Hosts whose roles carry certificates (etcd members, control planes, workers)."""
    return Selector("certificate-holders", lambda c: [h.name for h in c.spec.hosts if node_inventory(c, h.name)])


def workers_only() -> Selector:
    return Selector("role:worker-only", lambda c: [h.name for h in c.hosts_with_role("worker")
                                                   if "control-plane" not in c.roles_of(h.name)])


CheckCerts = Task("CheckCerts", steps=[CollectCerts()], hosts=cert_hosts(), tags=TAGS,
                  then=[CertsReport()], then_on=deploy_machine(), on_failure="continue",
                  description="every certificate and kubeconfig read from every node, judged against the local PKI")

PlanCertRenewal = Task("PlanCertRenewal", steps=[CollectCerts()], hosts=cert_hosts(), tags=TAGS,
                       then=[RenewalPlan()], then_on=deploy_machine(), on_failure="continue",
                       description="read every node; per node, what would be renewed and restarted")
ReissueCerts = Task("ReissueCerts", steps=[ReissueLeaves()], hosts=deploy_machine(), tags=TAGS | {"pki"},
                    description="new leaves and kubeconfig identities from the same CAs, once per renewal")
RenewEtcdMemberCerts = Task("RenewEtcdMemberCerts", steps=[RenewNodeCerts("etcd")], hosts=role("etcd"),
                            tags=TAGS | {"etcd"}, strategy=SERIAL, when=lambda c: c.spec.etcd.type == "kubexm",
                            description="one member at a time, only while the others keep quorum; wait for health")
RenewControlPlaneCerts = Task("RenewControlPlaneCerts", steps=[RenewNodeCerts("control-plane")],
                              hosts=role("control-plane"), tags=TAGS | {"control-plane"}, strategy=SERIAL,
                              description="one control-plane node at a time: files, static pods, kubelet, /readyz")
RenewWorkerKubeletCerts = Task("RenewWorkerKubeletCerts", steps=[RenewNodeCerts("kubelet")], hosts=workers_only(),
                               tags=TAGS | {"kubelet"},
                               description="kubelet client/serving certificates and kubelet.conf on workers")
RenewRegistryCerts = Task("RenewRegistryCerts", steps=[RenewNodeCerts("registry")], hosts=role("registry"),
                          tags=TAGS | {"registry"}, strategy=SERIAL,
                          when=lambda c: c.spec.registry.type == "docker-registry",
                          description="the registry's serving certificate, then a restart of the registry")
FinishCertRenewal = Task("FinishCertRenewal", steps=[FinishRenewal()], hosts=deploy_machine(), tags=TAGS,
                         description="close the renewal, or name the nodes a re-run finishes")

CertsCheckModule = Module("CertsCheckModule", [CheckCerts], description="certificates on every node")
CertsRenewModule = Module("CertsRenewModule", [PlanCertRenewal, ReissueCerts, RenewEtcdMemberCerts,
                                               RenewControlPlaneCerts, RenewWorkerKubeletCerts, RenewRegistryCerts,
                                               FinishCertRenewal],
                          description="renew certificates and kubeconfigs with rolling restarts")

CHECK_CERTS = Pipeline("CheckCertsPipeline", [CertsCheckModule],
                       description="every certificate and kubeconfig on every node, with its CA and expiry")
RENEW_CERTS = Pipeline("RenewCertsPipeline", [CertsRenewModule],
                       description="renew certificates and kubeconfigs without downtime")

# -- rotate-ca ------------------------------------------------------------------------------------------------

PASS_HOSTS = {"etcd": role("etcd"), "control-plane": role("control-plane"), "kubelet": workers_only()}


def _pass_hosts(run: RunContext, component: str, group: str) -> list[str]:
    if group == "etcd" and run.cluster.spec.etcd.type != "kubexm":
        return []
    return [n for n in PASS_HOSTS[group](run.cluster) if node_inventory(run.cluster, n)]


def rotation_phases(run: RunContext) -> list[str]:
    """``start`` (a new CA and the record) and the phases this run goes through, from the record."""
    record = rot.load(cluster_pki(run.cluster))
    if record is None:
        return ["start", *rot.PHASES]
    return list(rot.PHASES[rot.PHASES.index(record.phase):])


def plan_ca_rotation(host: HostContext) -> list[Step]:
    """Decides and reports the phases and the nodes of each, in order (an offline --plan too), before anything
    changes; returns the step that starts a new rotation."""
    run = host.run_ctx
    component = component_of(run)
    record = rot.load(cluster_pki(run.cluster))
    phases = rotation_phases(run)
    run.shared["ca-rotation"] = {"component": component, "phases": phases}
    rows = []
    for n, phase in enumerate(rot.PHASES, 1):
        for group in PASSES[component]:
            for node in _pass_hosts(run, component, group):
                if phase not in phases:
                    state = "done"
                elif record is not None and record.is_done(phase, node, group):
                    state = "done (this node)"
                else:
                    state = "to do"
                rows.append([f"{n} {phase}", node, group, state, rot.PHASE_WHAT[phase]])
    run.emit_report(f"Rotation of the {component} CA, phase by phase, one node at a time",
                    ["phase", "node", "files", "state", "what"], rows)
    return [BeginCARotation(component)] if "start" in phases else []


def _phase_on_deploy(phase: str, step: Step) -> object:
    def steps(host: HostContext) -> list[Step]:
        return [step] if phase in host.run_ctx.shared.get("ca-rotation", {}).get("phases", []) else []
    return steps


def _pass_steps(phase: str, group: str) -> object:
    def steps(host: HostContext) -> list[Step]:
        plan = host.run_ctx.shared.get("ca-rotation", {})
        if phase not in plan.get("phases", []) or group not in PASSES.get(plan.get("component", ""), ()):
            return []
        return [RotateNodeCA(group=group, phase=phase)]
    return steps


def _etcd_gate(cluster: Cluster) -> list[str]:
    """The member that answers for etcd's health: kubexm's first etcd member, or the first stacked one."""
    return [h.name for h in cluster.hosts_with_role("etcd" if cluster.spec.etcd.type == "kubexm" else "control-plane")]


def _holders(group: str) -> Selector:
    return Selector(f"{group}-certificate-holders",
                    lambda c: [n for n in PASS_HOSTS[group](c) if node_inventory(c, n)])


def _kubexm_etcd(cluster: Cluster) -> bool:
    return cluster.spec.etcd.type == "kubexm"


def _rotation_tasks() -> list[Task]:
    tasks = [
        Task("RequireHealthyEtcd", steps=[RequireHealthyEtcd()], hosts=first(Selector("etcd-members", _etcd_gate)),
             tags=TAGS | {"ca-rotation"}, when=lambda c: c.spec.etcd.type != "external",
             description="refused unless every etcd member is healthy"),
        Task("PlanCARotation", steps=plan_ca_rotation, hosts=deploy_machine(), tags=TAGS | {"ca-rotation", "plan"},
             description="which phases and nodes this run goes through (from the local record)"),
    ]
    for n, phase in enumerate(rot.PHASES, 1):
        title = phase.capitalize()
        tasks.append(Task(f"EnterCAPhase{title}", steps=_phase_on_deploy(phase, EnterCAPhase(phase)),  # type: ignore[arg-type]
                          hosts=deploy_machine(), tags=TAGS | {"ca-rotation"},
                          description=f"phase {n} begins once every node finished the one before"))
        for group in ("etcd", "control-plane", "kubelet"):
            label = {"etcd": "Etcd", "control-plane": "ControlPlane", "kubelet": "Worker"}[group]
            hosts = _holders(group)
            tasks.append(Task(f"CA{title}{label}Nodes", steps=_pass_steps(phase, group), hosts=hosts,  # type: ignore[arg-type]
                              tags=TAGS | {"ca-rotation", group}, strategy=SERIAL,
                              when=_kubexm_etcd if group == "etcd" else (lambda c: True),
                              description=f"phase {n} ({phase}) on {group} nodes, one at a time: "
                                          f"{rot.PHASE_WHAT[phase]}"))
    tasks.append(Task("FinishCARotation", steps=_phase_on_deploy("drop", FinishCARotation()),  # type: ignore[arg-type]
                      hosts=deploy_machine(), tags=TAGS | {"ca-rotation"},
                      description="the old CA is removed once every node trusts only the new one"))
    return tasks


ROTATE_CA = Pipeline("RotateCAPipeline", [Module("CARotationModule", _rotation_tasks(),
                                                 description="rotate a CA in three phases without downtime")],
                     description="rotate a CA: trust both, re-issue every leaf, trust only the new one")
ALL = [CHECK_CERTS, RENEW_CERTS, ROTATE_CA]
