"""Certificate pipelines: `certs check` (read every node, judge locally) and `certs renew` (re-issue, place,
restart one node at a time)."""

from __future__ import annotations

from kubexm.engine import SERIAL, Module, Pipeline, Task, deploy_machine, role
from kubexm.engine.selectors import Selector
from kubexm.pki.inventory import node_inventory
from kubexm.steps.cert_renew import FinishRenewal, ReissueLeaves, RenewalPlan, RenewNodeCerts
from kubexm.steps.certs import CertsReport, CollectCerts

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
ALL = [CHECK_CERTS, RENEW_CERTS]
