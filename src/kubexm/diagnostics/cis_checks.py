"""The CIS Kubernetes Benchmark items kubexm judges from what it reads on the nodes, as a table of data.

Section numbers follow CIS Kubernetes Benchmark v1.12 (Kubernetes 1.32 to 1.34; earlier versions number the
items read here the same way). Wording and remediation are kubexm's: every remediation says how to fix the
item the kubexm way (``kubexm scan cis --fix`` for file modes and owners, the cluster file for settings
kubexm generates). The evaluation lives in ``kubexm.diagnostics.cis``; nothing here runs anything.

File checks name paths directly or through a target ``@name`` that ``cis.py`` resolves per node:
``@pki``/``@pki-certs``/``@pki-keys`` (everything, ``*.crt``, ``*.key`` under /etc/kubernetes/pki),
``@etcd-data-dir`` (spec.etcd.dataDir) and ``@etcd-spec`` (the etcd static pod manifest with stacked etcd,
kubexm's etcd unit and environment file otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BENCHMARK = "CIS Kubernetes Benchmark v1.12"

Status = Literal["PASS", "FAIL", "WARN", "INFO"]
# Which nodes an item concerns: control-plane nodes, etcd members (kubexm's own etcd on the hosts of role etcd;
# stacked etcd on the control planes) and every node running kubelet (control planes and workers).
Scope = Literal["control-plane", "etcd", "kubelet", "pki"]  # pki: control planes and etcd members
Component = Literal["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kubelet"]
# How a setting is judged against ``value`` (see ``cis.judge_setting``):
#   eq / ne: equal / not equal (booleans and case ignored); set / unset: present / absent;
#   has / lacks: a comma-separated list holds every / none of ``value``; within: set, and every item is one of
#   ``value``; gate: the feature gate ``value`` is not turned off; nonzero: a duration that is not 0.
Op = Literal["eq", "ne", "set", "unset", "has", "lacks", "within", "gate", "nonzero"]

MANIFESTS = "/etc/kubernetes/manifests"
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
KUBELET_FLAGS_FILES = ("/var/lib/kubelet/kubeadm-flags.env", "/etc/default/kubelet")
KUBELET_UNIT_FILES = ("/etc/systemd/system/kubelet.service", "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf")
ETCD_ENV = "/etc/etcd.env"

# Cipher suites the benchmark calls strong, for the API server and for kubelet (a narrower list).
STRONG_CIPHERS = (
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)
KUBELET_STRONG_CIPHERS = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
)


@dataclass(frozen=True)
class FileCheck:
    """Mode and/or owner of files: ``mode`` is the most permissive mode allowed (a bit outside it fails)."""

    id: str
    title: str
    scope: Scope
    paths: tuple[str, ...]
    mode: int | None = None
    owner: str | None = None
    # A mismatch is a WARN. Manual file items of the benchmark (1.1.20, 1.1.21, 4.1.7, 4.1.8) are not marked so:
    # kubexm reads their modes exactly, and a world-readable private key is a failure, not a judgement call.
    manual: bool = False
    fixable: bool = True  # `scan cis --fix` may chmod/chown it
    remediation: str = ""


@dataclass(frozen=True)
class SettingCheck:
    """A component setting as written on the node: a flag of a static pod or of etcd, or a kubelet config
    field (dotted path in config.yaml; ``flag`` is the command-line flag that overrides it)."""

    id: str
    title: str
    component: Component
    keys: tuple[str, ...]
    op: Op
    value: str | tuple[str, ...] = ""
    default: str | None = None  # the component's own value when the key is not written; None: nothing
    flag: str = ""
    manual: bool = False
    remediation: str = ""


Check = FileCheck | SettingCheck

_FILE_FIX = "`kubexm scan cis --fix` sets it on the nodes"


def _mode(what: str, mode: int) -> str:
    return f"chmod {mode:o} {what} ({_FILE_FIX})"


def _owner(what: str) -> str:
    return f"chown root:root {what} ({_FILE_FIX})"


def _api(flag: str, value: str) -> str:
    return (f"set spec.kubernetes.apiServerExtraArgs.{flag}: \"{value}\" in the cluster file (kubeadm writes it into "
            f"{MANIFESTS}/kube-apiserver.yaml)")


def _cm(flag: str, value: str) -> str:
    return (f"set spec.kubernetes.controllerManagerExtraArgs.{flag}: \"{value}\" in the cluster file (kubeadm writes "
            f"it into {MANIFESTS}/kube-controller-manager.yaml)")


def _sched(flag: str, value: str) -> str:
    return (f"set spec.kubernetes.schedulerExtraArgs.{flag}: \"{value}\" in the cluster file (kubeadm writes it into "
            f"{MANIFESTS}/kube-scheduler.yaml)")


def _kubelet(flag: str, value: str) -> str:
    return f"set spec.kubernetes.kubeletExtraArgs.{flag}: \"{value}\" in the cluster file"


_ETCD = "kubexm writes it into /etc/etcd.env (stacked etcd: kubeadm's etcd manifest); do not override it with " \
        "spec.etcd.extraArgs"

FILE_CHECKS: tuple[FileCheck, ...] = (
    FileCheck("1.1.1", "API server pod specification file mode 600 or stricter", "control-plane",
              (f"{MANIFESTS}/kube-apiserver.yaml",), mode=0o600,
              remediation=_mode(f"{MANIFESTS}/kube-apiserver.yaml", 0o600)),
    FileCheck("1.1.2", "API server pod specification file owned by root:root", "control-plane",
              (f"{MANIFESTS}/kube-apiserver.yaml",), owner="root:root",
              remediation=_owner(f"{MANIFESTS}/kube-apiserver.yaml")),
    FileCheck("1.1.3", "controller manager pod specification file mode 600 or stricter", "control-plane",
              (f"{MANIFESTS}/kube-controller-manager.yaml",), mode=0o600,
              remediation=_mode(f"{MANIFESTS}/kube-controller-manager.yaml", 0o600)),
    FileCheck("1.1.4", "controller manager pod specification file owned by root:root", "control-plane",
              (f"{MANIFESTS}/kube-controller-manager.yaml",), owner="root:root",
              remediation=_owner(f"{MANIFESTS}/kube-controller-manager.yaml")),
    FileCheck("1.1.5", "scheduler pod specification file mode 600 or stricter", "control-plane",
              (f"{MANIFESTS}/kube-scheduler.yaml",), mode=0o600,
              remediation=_mode(f"{MANIFESTS}/kube-scheduler.yaml", 0o600)),
    FileCheck("1.1.6", "scheduler pod specification file owned by root:root", "control-plane",
              (f"{MANIFESTS}/kube-scheduler.yaml",), owner="root:root",
              remediation=_owner(f"{MANIFESTS}/kube-scheduler.yaml")),
    FileCheck("1.1.7", "etcd pod specification (kubexm's etcd: its unit and environment file) mode 600 or stricter",
              "etcd", ("@etcd-spec",), mode=0o600,
              remediation=_mode("the etcd manifest or /etc/etcd.env and etcd.service", 0o600)),
    FileCheck("1.1.8", "etcd pod specification (kubexm's etcd: its unit and environment file) owned by root:root",
              "etcd", ("@etcd-spec",), owner="root:root", remediation=_owner("the etcd manifest or /etc/etcd.env")),
    FileCheck("1.1.11", "etcd data directory mode 700 or stricter", "etcd", ("@etcd-data-dir",), mode=0o700,
              remediation=_mode("spec.etcd.dataDir", 0o700)),
    # kubexm's etcd unit runs etcd as root (there is no etcd user): the benchmark's etcd:etcd cannot hold, and
    # a chown would change nothing about who reads the data (1.1.11's mode 700 does). A WARN naming the design
    # gap, never "fixed".
    FileCheck("1.1.12", "etcd data directory owned by the etcd user (etcd:etcd)", "etcd", ("@etcd-data-dir",),
              owner="etcd:etcd", manual=True, fixable=False,
              remediation="kubexm runs etcd as root (no etcd user exists): with mode 700 only root reads the data; "
                          "a dedicated user needs User=etcd in kubexm's etcd unit and its files owned by etcd"),
    FileCheck("1.1.13", "admin.conf / super-admin.conf mode 600 or stricter", "control-plane",
              ("/etc/kubernetes/admin.conf", "/etc/kubernetes/super-admin.conf"), mode=0o600,
              remediation=_mode("/etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf", 0o600)),
    FileCheck("1.1.14", "admin.conf / super-admin.conf owned by root:root", "control-plane",
              ("/etc/kubernetes/admin.conf", "/etc/kubernetes/super-admin.conf"), owner="root:root",
              remediation=_owner("/etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf")),
    FileCheck("1.1.15", "scheduler.conf mode 600 or stricter", "control-plane", ("/etc/kubernetes/scheduler.conf",),
              mode=0o600, remediation=_mode("/etc/kubernetes/scheduler.conf", 0o600)),
    FileCheck("1.1.16", "scheduler.conf owned by root:root", "control-plane", ("/etc/kubernetes/scheduler.conf",),
              owner="root:root", remediation=_owner("/etc/kubernetes/scheduler.conf")),
    FileCheck("1.1.17", "controller-manager.conf mode 600 or stricter", "control-plane",
              ("/etc/kubernetes/controller-manager.conf",), mode=0o600,
              remediation=_mode("/etc/kubernetes/controller-manager.conf", 0o600)),
    FileCheck("1.1.18", "controller-manager.conf owned by root:root", "control-plane",
              ("/etc/kubernetes/controller-manager.conf",), owner="root:root",
              remediation=_owner("/etc/kubernetes/controller-manager.conf")),
    FileCheck("1.1.19", "/etc/kubernetes/pki and everything in it owned by root:root", "pki", ("@pki",),
              owner="root:root", remediation=_owner("the listed paths under /etc/kubernetes/pki")),
    FileCheck("1.1.20", "PKI certificate files (*.crt) mode 644 or stricter", "pki", ("@pki-certs",), mode=0o644,
              remediation=_mode("the listed certificates", 0o644)),
    FileCheck("1.1.21", "PKI private key files (*.key) mode 600", "pki", ("@pki-keys",), mode=0o600,
              remediation=_mode("the listed keys", 0o600)),
    FileCheck("4.1.1", "kubelet service file and drop-in mode 600 or stricter", "kubelet", KUBELET_UNIT_FILES,
              mode=0o600, remediation=_mode(" ".join(KUBELET_UNIT_FILES), 0o600)),
    FileCheck("4.1.2", "kubelet service file and drop-in owned by root:root", "kubelet", KUBELET_UNIT_FILES,
              owner="root:root", remediation=_owner(" ".join(KUBELET_UNIT_FILES))),
    FileCheck("4.1.5", "kubelet.conf (kubelet's kubeconfig) mode 600 or stricter", "kubelet",
              ("/etc/kubernetes/kubelet.conf",), mode=0o600, remediation=_mode("/etc/kubernetes/kubelet.conf", 0o600)),
    FileCheck("4.1.6", "kubelet.conf owned by root:root", "kubelet", ("/etc/kubernetes/kubelet.conf",),
              owner="root:root", remediation=_owner("/etc/kubernetes/kubelet.conf")),
    FileCheck("4.1.7", "client CA file (kubelet's clientCAFile) mode 644 or stricter", "kubelet",
              ("/etc/kubernetes/pki/ca.crt",), mode=0o644,
              remediation=_mode("/etc/kubernetes/pki/ca.crt", 0o644)),
    FileCheck("4.1.8", "client CA file owned by root:root", "kubelet", ("/etc/kubernetes/pki/ca.crt",),
              owner="root:root", remediation=_owner("/etc/kubernetes/pki/ca.crt")),
    FileCheck("4.1.9", "kubelet config.yaml mode 600 or stricter", "kubelet", (KUBELET_CONFIG,), mode=0o600,
              remediation=_mode(KUBELET_CONFIG, 0o600)),
    FileCheck("4.1.10", "kubelet config.yaml owned by root:root", "kubelet", (KUBELET_CONFIG,), owner="root:root",
              remediation=_owner(KUBELET_CONFIG)),
)

_PLUGINS_ON = "enable-admission-plugins"
_PLUGINS_OFF = "disable-admission-plugins"

SETTING_CHECKS: tuple[SettingCheck, ...] = (
    SettingCheck("1.2.1", "API server --anonymous-auth=false", "kube-apiserver", ("anonymous-auth",), "eq", "false",
                 default="true", manual=True,
                 remediation=_api("anonymous-auth", "false") + "; health probes of the API server then need "
                                                               "credentials (kubeadm's probes use /livez without)"),
    SettingCheck("1.2.2", "API server --token-auth-file not set", "kube-apiserver", ("token-auth-file",), "unset",
                 remediation="remove token-auth-file from spec.kubernetes.apiServerExtraArgs"),
    SettingCheck("1.2.3", "admission plugin DenyServiceExternalIPs enabled", "kube-apiserver", (_PLUGINS_ON,), "has",
                 ("DenyServiceExternalIPs",), manual=True,
                 remediation=_api(_PLUGINS_ON, "NodeRestriction,DenyServiceExternalIPs")),
    SettingCheck("1.2.4", "API server --kubelet-client-certificate and --kubelet-client-key set", "kube-apiserver",
                 ("kubelet-client-certificate", "kubelet-client-key"), "set",
                 remediation="kubeadm sets both from kubexm's PKI; remove any override from apiServerExtraArgs"),
    SettingCheck("1.2.5", "API server --kubelet-certificate-authority set", "kube-apiserver",
                 ("kubelet-certificate-authority",), "set",
                 remediation=_api("kubelet-certificate-authority", "/etc/kubernetes/pki/ca.crt") +
                 " (kubexm issues every kubelet's serving certificate from that CA)"),
    SettingCheck("1.2.6", "API server --authorization-mode not AlwaysAllow", "kube-apiserver", ("authorization-mode",),
                 "lacks", ("AlwaysAllow",), default="AlwaysAllow", remediation=_api("authorization-mode", "Node,RBAC")),
    SettingCheck("1.2.7", "API server --authorization-mode includes Node", "kube-apiserver", ("authorization-mode",),
                 "has", ("Node",), default="AlwaysAllow", remediation=_api("authorization-mode", "Node,RBAC")),
    SettingCheck("1.2.8", "API server --authorization-mode includes RBAC", "kube-apiserver", ("authorization-mode",),
                 "has", ("RBAC",), default="AlwaysAllow", remediation=_api("authorization-mode", "Node,RBAC")),
    SettingCheck("1.2.9", "admission plugin EventRateLimit enabled", "kube-apiserver", (_PLUGINS_ON,), "has",
                 ("EventRateLimit",), manual=True,
                 remediation="EventRateLimit needs an admission configuration file (--admission-control-config-file)"
                             "; add both through spec.kubernetes.apiServerExtraArgs"),
    SettingCheck("1.2.10", "admission plugin AlwaysAdmit not enabled", "kube-apiserver", (_PLUGINS_ON,), "lacks",
                 ("AlwaysAdmit",), remediation="remove AlwaysAdmit from apiServerExtraArgs.enable-admission-plugins"),
    SettingCheck("1.2.11", "admission plugin AlwaysPullImages enabled", "kube-apiserver", (_PLUGINS_ON,), "has",
                 ("AlwaysPullImages",), manual=True,
                 remediation=_api(_PLUGINS_ON, "NodeRestriction,AlwaysPullImages") +
                 " (every pod start then pulls: needs the registry reachable)"),
    SettingCheck("1.2.12", "admission plugin ServiceAccount not disabled", "kube-apiserver", (_PLUGINS_OFF,), "lacks",
                 ("ServiceAccount",), remediation="remove ServiceAccount from apiServerExtraArgs.disable-admission-plugins"),
    SettingCheck("1.2.13", "admission plugin NamespaceLifecycle not disabled", "kube-apiserver", (_PLUGINS_OFF,),
                 "lacks", ("NamespaceLifecycle",),
                 remediation="remove NamespaceLifecycle from apiServerExtraArgs.disable-admission-plugins"),
    SettingCheck("1.2.14", "admission plugin NodeRestriction enabled", "kube-apiserver", (_PLUGINS_ON,), "has",
                 ("NodeRestriction",), remediation=_api(_PLUGINS_ON, "NodeRestriction")),
    SettingCheck("1.2.15", "API server --profiling=false", "kube-apiserver", ("profiling",), "eq", "false",
                 default="true", remediation=_api("profiling", "false")),
    SettingCheck("1.2.16", "API server --audit-log-path set", "kube-apiserver", ("audit-log-path",), "set",
                 remediation=_api("audit-log-path", "/var/log/kubernetes/audit/audit.log") +
                 " with audit-policy-file and the log directory mounted into the pod"),
    SettingCheck("1.2.17", "API server --audit-log-maxage 30 or as appropriate", "kube-apiserver",
                 ("audit-log-maxage",), "set", remediation=_api("audit-log-maxage", "30")),
    SettingCheck("1.2.18", "API server --audit-log-maxbackup 10 or as appropriate", "kube-apiserver",
                 ("audit-log-maxbackup",), "set", remediation=_api("audit-log-maxbackup", "10")),
    SettingCheck("1.2.19", "API server --audit-log-maxsize 100 or as appropriate", "kube-apiserver",
                 ("audit-log-maxsize",), "set", remediation=_api("audit-log-maxsize", "100")),
    SettingCheck("1.2.21", "API server --service-account-lookup=true", "kube-apiserver", ("service-account-lookup",),
                 "eq", "true", default="true", remediation="remove service-account-lookup from apiServerExtraArgs"),
    SettingCheck("1.2.22", "API server --service-account-key-file set", "kube-apiserver",
                 ("service-account-key-file",), "set", remediation="kubeadm sets it to kubexm's sa.pub; remove overrides"),
    SettingCheck("1.2.23", "API server --etcd-certfile and --etcd-keyfile set", "kube-apiserver",
                 ("etcd-certfile", "etcd-keyfile"), "set",
                 remediation="kubexm gives kubeadm the etcd client certificate; remove overrides"),
    SettingCheck("1.2.24", "API server --tls-cert-file and --tls-private-key-file set", "kube-apiserver",
                 ("tls-cert-file", "tls-private-key-file"), "set",
                 remediation="kubeadm sets both from kubexm's PKI; remove overrides"),
    SettingCheck("1.2.25", "API server --client-ca-file set", "kube-apiserver", ("client-ca-file",), "set",
                 remediation="kubeadm sets it from kubexm's PKI; remove overrides"),
    SettingCheck("1.2.26", "API server --etcd-cafile set", "kube-apiserver", ("etcd-cafile",), "set",
                 remediation="kubexm gives kubeadm etcd's CA; remove overrides"),
    SettingCheck("1.2.27", "API server --encryption-provider-config set (secrets encrypted at rest)",
                 "kube-apiserver", ("encryption-provider-config",), "set", manual=True,
                 remediation="write an EncryptionConfiguration on the control planes and " +
                 _api("encryption-provider-config", "/etc/kubernetes/enc/config.yaml")),
    SettingCheck("1.2.29", "API server uses only strong TLS cipher suites", "kube-apiserver", ("tls-cipher-suites",),
                 "within", STRONG_CIPHERS, manual=True,
                 remediation=_api("tls-cipher-suites", ",".join(STRONG_CIPHERS[3:9]))),
    SettingCheck("1.2.30", "API server --service-account-extend-token-expiration=false", "kube-apiserver",
                 ("service-account-extend-token-expiration",), "eq", "false", default="true",
                 remediation=_api("service-account-extend-token-expiration", "false")),
    SettingCheck("1.3.1", "controller manager --terminated-pod-gc-threshold set", "kube-controller-manager",
                 ("terminated-pod-gc-threshold",), "set", manual=True,
                 remediation=_cm("terminated-pod-gc-threshold", "10")),
    SettingCheck("1.3.2", "controller manager --profiling=false", "kube-controller-manager", ("profiling",), "eq",
                 "false", default="true", remediation=_cm("profiling", "false")),
    SettingCheck("1.3.3", "controller manager --use-service-account-credentials=true", "kube-controller-manager",
                 ("use-service-account-credentials",), "eq", "true", default="false",
                 remediation=_cm("use-service-account-credentials", "true")),
    SettingCheck("1.3.4", "controller manager --service-account-private-key-file set", "kube-controller-manager",
                 ("service-account-private-key-file",), "set", remediation="kubeadm sets it; remove overrides"),
    SettingCheck("1.3.5", "controller manager --root-ca-file set", "kube-controller-manager", ("root-ca-file",), "set",
                 remediation="kubeadm sets it; remove overrides"),
    SettingCheck("1.3.6", "controller manager feature RotateKubeletServerCertificate on", "kube-controller-manager",
                 ("feature-gates",), "gate", "RotateKubeletServerCertificate", default="RotateKubeletServerCertificate=true",
                 remediation="remove RotateKubeletServerCertificate=false from spec.kubernetes.featureGates"),
    SettingCheck("1.3.7", "controller manager --bind-address=127.0.0.1", "kube-controller-manager",
                 ("bind-address",), "eq", "127.0.0.1", default="0.0.0.0",
                 remediation=_cm("bind-address", "127.0.0.1") + " (kubexm's generated default is 0.0.0.0)"),
    SettingCheck("1.4.1", "scheduler --profiling=false", "kube-scheduler", ("profiling",), "eq", "false",
                 default="true", remediation=_sched("profiling", "false")),
    SettingCheck("1.4.2", "scheduler --bind-address=127.0.0.1", "kube-scheduler", ("bind-address",), "eq",
                 "127.0.0.1", default="0.0.0.0",
                 remediation=_sched("bind-address", "127.0.0.1") + " (kubexm's generated default is 0.0.0.0)"),
    SettingCheck("2.1", "etcd --cert-file and --key-file set", "etcd", ("cert-file", "key-file"), "set",
                 remediation=_ETCD),
    SettingCheck("2.2", "etcd --client-cert-auth=true", "etcd", ("client-cert-auth",), "eq", "true", default="false",
                 remediation=_ETCD),
    SettingCheck("2.3", "etcd --auto-tls not true", "etcd", ("auto-tls",), "ne", "true", default="false",
                 remediation="remove auto-tls from spec.etcd.extraArgs"),
    SettingCheck("2.4", "etcd --peer-cert-file and --peer-key-file set", "etcd", ("peer-cert-file", "peer-key-file"),
                 "set", remediation=_ETCD),
    SettingCheck("2.5", "etcd --peer-client-cert-auth=true", "etcd", ("peer-client-cert-auth",), "eq", "true",
                 default="false", remediation=_ETCD),
    SettingCheck("2.6", "etcd --peer-auto-tls not true", "etcd", ("peer-auto-tls",), "ne", "true", default="false",
                 remediation="remove peer-auto-tls from spec.etcd.extraArgs"),
    SettingCheck("4.2.1", "kubelet anonymous authentication off", "kubelet", ("authentication.anonymous.enabled",),
                 "eq", "false", default="false", flag="anonymous-auth",
                 remediation="kubeadm writes authentication.anonymous.enabled: false; remove anonymous-auth from "
                             "spec.kubernetes.kubeletExtraArgs"),
    SettingCheck("4.2.2", "kubelet authorization mode not AlwaysAllow", "kubelet", ("authorization.mode",), "ne",
                 "AlwaysAllow", default="Webhook", flag="authorization-mode",
                 remediation="kubeadm writes authorization.mode: Webhook; remove authorization-mode from kubeletExtraArgs"),
    SettingCheck("4.2.3", "kubelet client CA file set", "kubelet", ("authentication.x509.clientCAFile",), "set",
                 flag="client-ca-file", remediation="kubeadm writes clientCAFile: /etc/kubernetes/pki/ca.crt"),
    SettingCheck("4.2.4", "kubelet read-only port 0", "kubelet", ("readOnlyPort",), "eq", "0", default="0",
                 flag="read-only-port", manual=True, remediation="remove read-only-port from kubeletExtraArgs"),
    SettingCheck("4.2.5", "kubelet streaming connection idle timeout not 0", "kubelet",
                 ("streamingConnectionIdleTimeout",), "nonzero", default="4h0m0s",
                 flag="streaming-connection-idle-timeout", manual=True,
                 remediation=_kubelet("streaming-connection-idle-timeout", "5m")),
    SettingCheck("4.2.6", "kubelet makes its iptables utility chains", "kubelet", ("makeIPTablesUtilChains",), "eq",
                 "true", default="true", flag="make-iptables-util-chains",
                 remediation="remove make-iptables-util-chains from kubeletExtraArgs"),
    SettingCheck("4.2.6@1.6", "kubelet protects kernel defaults (item 4.2.6 of CIS v1.6)", "kubelet",
                 ("protectKernelDefaults",), "eq", "true", default="false", flag="protect-kernel-defaults",
                 manual=True,
                 remediation="protectKernelDefaults: true in kubexm's kubelet configuration, with the sysctls kubelet "
                             "then requires (vm.overcommit_memory=1, vm.panic_on_oom=0, kernel.panic=10, "
                             "kernel.panic_on_oops=1) in spec.system.sysctl; kubelet refuses to start otherwise"),
    SettingCheck("4.2.7", "kubelet --hostname-override not set", "kubelet", ("hostnameOverride",), "unset",
                 flag="hostname-override", manual=True, remediation="remove hostname-override from kubeletExtraArgs"),
    SettingCheck("4.2.10", "kubelet client certificate rotation on", "kubelet", ("rotateCertificates",), "eq", "true",
                 default="false", flag="rotate-certificates",
                 remediation="kubexm writes rotateCertificates: true; remove rotate-certificates from kubeletExtraArgs"),
    SettingCheck("4.2.11", "kubelet serving certificate rotation (RotateKubeletServerCertificate) on", "kubelet",
                 ("featureGates",), "gate", "RotateKubeletServerCertificate", default="RotateKubeletServerCertificate=true",
                 flag="feature-gates", manual=True,
                 remediation="remove RotateKubeletServerCertificate=false from spec.kubernetes.featureGates (kubexm "
                             "issues serving certificates from the cluster CA and renews them with `kubexm certs renew`)"),
    SettingCheck("4.2.12", "kubelet uses only strong TLS cipher suites", "kubelet", ("tlsCipherSuites",), "within",
                 KUBELET_STRONG_CIPHERS, flag="tls-cipher-suites", manual=True,
                 remediation=_kubelet("tls-cipher-suites", ",".join(KUBELET_STRONG_CIPHERS))),
    SettingCheck("4.2.13", "kubelet limits pod PIDs", "kubelet", ("podPidsLimit",), "ne", "-1", default="-1",
                 flag="pod-max-pids", manual=True, remediation=_kubelet("pod-max-pids", "4096")),
    SettingCheck("4.2.14", "kubelet seccomp default profile on", "kubelet", ("seccompDefault",), "eq", "true",
                 default="false", flag="seccomp-default", manual=True,
                 remediation=_kubelet("seccomp-default", "true")),
)

CHECKS: tuple[Check, ...] = (*FILE_CHECKS, *SETTING_CHECKS)


def _order(check: Check) -> tuple[int, ...]:
    return tuple(int(p) for p in check.id.split("@")[0].split("."))


BY_ID: dict[str, Check] = {c.id: c for c in sorted(CHECKS, key=_order)}
