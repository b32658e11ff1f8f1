"""Pydantic models of the cluster file (``apiVersion: kubexm.io/v1alpha1``, ``kind: Cluster``).

Field names are snake_case in Python and camelCase in YAML (KubeKey users know the
camelCase spelling). Unknown keys are rejected so that a typo is an error naming the
key, not a silently ignored setting. Cross-field rules live in ``spec.validate``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

from kubexm.spec.fields import (
    AbsPath,
    Address,
    ArgValue,
    CertSan,
    ChartRef,
    Cidr,
    ClusterName,
    DnsLabel,
    DnsName,
    DnsUpstream,
    FeatureGate,
    FlagName,
    Identifier,
    ImageRef,
    ImageTag,
    InterfaceName,
    IPAddress,
    LabelKey,
    LabelValue,
    LocalPath,
    ManifestSource,
    NodeName,
    NtpServer,
    PackageName,
    RegistryHost,
    RegistryPrefix,
    RegistryUser,
    RepositoryPath,
    Schedule,
    Secret,
    Sha256,
    SysctlKey,
    SysctlValue,
    Taint,
    Timezone,
    Url,
    UserName,
    Version,
    bad_character,
    check_secret,
)

API_VERSION = "kubexm.io/v1alpha1"
KIND = "Cluster"

# Kubernetes minor versions kubexm knows how to deploy (kubeadm API v1beta3 up to 1.30, v1beta4 from 1.31).
SUPPORTED_K8S_MINORS = tuple(range(22, 35))
DEFAULT_K8S_VERSION = "v1.33.7"
DEFAULT_ETCD_VERSION = "v3.5.21"

ROLE_NAMES = ("etcd", "control-plane", "worker", "loadbalancer", "registry")


class SpecModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_assignment=False
    )
    # Fields whose nested values are data for a YAML or JSON writer, never a config line (Helm values).
    structured_fields: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _one_line(cls, value: Any, info: ValidationInfo) -> Any:
        """Every string of every field, whatever its type, stays on one line: the typed fields already refuse
        this, so this only matters for a field someone adds as plain ``str``."""
        if info.field_name in cls.structured_fields:
            return value
        problem = _line_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def _line_problem(value: Any, where: str = "") -> str | None:
    if isinstance(value, str):
        bad = bad_character(value)
        return f"{where}contains {bad}; values must be printable text on one line" if bad else None
    if isinstance(value, SecretStr):
        try:
            check_secret(value)
        except ValueError as exc:
            return f"{where}{exc}"
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            problem = _line_problem(item, f"item {i} ")
            if problem:
                return problem
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _line_problem(key, "a key ") or _line_problem(item, f"the value of {key!r} ")
            if problem:
                return problem
    return None


class Host(SpecModel):
    """A machine kubexm reaches over SSH (or the deploy machine itself with ``connection: local``)."""

    name: NodeName
    address: Address
    internal_address: IPAddress | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: UserName = "root"
    password: Secret | None = None
    private_key_path: LocalPath | None = None
    private_key_passphrase: Secret | None = None
    sudo_password: Secret | None = None
    connection: Literal["ssh", "local"] = "ssh"
    bastion: NodeName | None = Field(default=None, description="name of a host in `bastions` to jump through")
    arch: Literal["amd64", "arm64"] | None = None
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list, description="key[=value]:effect, set when the node joins and "
                                "kept by `config sync`")
    instance_type: Identifier | None = Field(default=None, description="priced by spec.cost.instanceTypes")

    @property
    def internal_ip(self) -> str:
        return self.internal_address or self.address


class Bastion(SpecModel):
    name: NodeName
    address: Address
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: UserName = "root"
    password: Secret | None = None
    private_key_path: LocalPath | None = None


class RoleGroups(SpecModel):
    etcd: list[NodeName] = Field(default_factory=list)
    control_plane: list[NodeName] = Field(default_factory=list, alias="control-plane")
    worker: list[NodeName] = Field(default_factory=list)
    loadbalancer: list[NodeName] = Field(default_factory=list)
    registry: list[NodeName] = Field(default_factory=list)

    # host -> its roles, rebuilt when a member list is replaced or changes length: roles_of is asked per host
    # by per-host work (a fleet of 1,000 would otherwise scan every list for every host, for every host).
    _index: dict[str, list[str]] = PrivateAttr(default_factory=dict)
    _index_key: tuple[tuple[int, int], ...] = PrivateAttr(default=())

    def members(self, role: str) -> list[str]:
        return list(getattr(self, role.replace("-", "_")))

    def roles_of(self, host: str) -> list[str]:
        lists = [getattr(self, role.replace("-", "_")) for role in ROLE_NAMES]
        key = tuple((id(members), len(members)) for members in lists)
        if key != self._index_key:
            index: dict[str, list[str]] = {}
            for role, members in zip(ROLE_NAMES, lists, strict=True):
                for name in members:
                    roles = index.setdefault(name, [])
                    if not roles or roles[-1] != role:
                        roles.append(role)
            self._index, self._index_key = index, key
        return list(self._index.get(host, ()))


class ControlPlaneEndpoint(SpecModel):
    domain: DnsName = "lb.kubexm.local"
    address: IPAddress | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 6443
    load_balancer: Literal["none", "haproxy-keepalived", "kube-vip", "internal", "external"] = "none"
    interface: InterfaceName | None = None
    # keepalived's VRRP router id: unique per VIP on one L2 segment (two clusters on one VLAN must differ).
    virtual_router_id: Annotated[int, Field(ge=1, le=255)] = 51
    # Where haproxy (dedicated balancers, or the per-worker "internal" proxy) listens when it shares a host
    # with an apiserver, which already holds `port`.
    balancer_port: Annotated[int, Field(ge=1, le=65535)] = 8443
    kube_vip_version: ImageTag = "v0.8.9"
    haproxy_image: ImageRef = "docker.io/library/haproxy:2.8"


class Kubernetes(SpecModel):
    version: Version = DEFAULT_K8S_VERSION
    cluster_name: DnsName = "cluster.local"
    deploy_mode: Literal["kubeadm", "binary"] = "kubeadm"
    pod_cidr: Cidr = "10.233.64.0/18"
    service_cidr: Cidr = "10.233.0.0/18"
    dns_domain: DnsName = "cluster.local"
    proxy_mode: Literal["iptables", "ipvs", "nftables"] = "ipvs"
    cgroup_driver: Literal["systemd", "cgroupfs"] = "systemd"
    max_pods: Annotated[int, Field(ge=10, le=1000)] = 110
    api_server_cert_sans: list[CertSan] = Field(default_factory=list, alias="apiServerCertSANs")
    api_server_extra_args: dict[FlagName, ArgValue] = Field(default_factory=dict)
    controller_manager_extra_args: dict[FlagName, ArgValue] = Field(default_factory=dict)
    scheduler_extra_args: dict[FlagName, ArgValue] = Field(default_factory=dict)
    kubelet_extra_args: dict[FlagName, ArgValue] = Field(default_factory=dict)
    feature_gates: dict[FeatureGate, bool] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        parts = value.lstrip("v").split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"'{value}' is not a version like v1.32.4")
        return "v" + value.lstrip("v")

    @property
    def minor(self) -> int:
        return int(self.version.lstrip("v").split(".")[1])


class EtcdBackup(SpecModel):
    directory: AbsPath = "/var/backups/kubexm/etcd"
    keep: Annotated[int, Field(ge=1)] = 7
    max_age_days: Annotated[int, Field(ge=1)] = 30
    schedule: Schedule | None = None


class Etcd(SpecModel):
    type: Literal["kubexm", "kubeadm", "external"] = "kubexm"
    version: Version = DEFAULT_ETCD_VERSION
    data_dir: AbsPath = "/var/lib/etcd"
    endpoints: list[Url] = Field(default_factory=list, description="for type external")
    # Files on the deploy machine (read to reach the external etcd).
    ca_file: LocalPath | None = None
    cert_file: LocalPath | None = None
    key_file: LocalPath | None = None
    backup: EtcdBackup = Field(default_factory=EtcdBackup)
    extra_args: dict[FlagName, ArgValue] = Field(default_factory=dict)


class RegistryMirror(SpecModel):
    registry: RegistryHost = Field(description="the upstream registry, e.g. docker.io")
    endpoints: list[Url]


class ContainerRuntime(SpecModel):
    type: Literal["containerd", "docker", "crio"] = "containerd"
    version: Version | None = None
    sandbox_image: ImageRef | None = None
    registry_mirrors: list[RegistryMirror] = Field(default_factory=list)
    insecure_registries: list[RegistryHost] = Field(default_factory=list)
    data_root: AbsPath | None = None
    snapshotter: Identifier = Field(default="overlayfs", description="containerd snapshotter for kubelet and image "
                             "imports; 'native' where overlayfs cannot nest (containers on overlay roots)")
    cri_dockerd_version: Version = Field(default="0.3.11", description="cri-dockerd release used with type docker")
    import_images: bool = Field(default=True, description="import image archives of the local asset source "
                                "(group images) on every node")


class Calico(SpecModel):
    mode: Literal["ipip", "vxlan", "none"] = "ipip"
    mtu: Annotated[int, Field(ge=576, le=9000)] | None = None
    version: Version | None = None


class Flannel(SpecModel):
    backend: Literal["vxlan", "host-gw"] = "vxlan"
    version: Version | None = None


class Cilium(SpecModel):
    version: Version | None = None
    kube_proxy_replacement: bool = False
    mtu: Annotated[int, Field(ge=576, le=9000)] | None = None


class Network(SpecModel):
    plugin: Literal["calico", "flannel", "cilium", "none"] = "calico"
    interface: InterfaceName | None = None
    calico: Calico = Field(default_factory=Calico)
    flannel: Flannel = Field(default_factory=Flannel)
    cilium: Cilium = Field(default_factory=Cilium)


class RegistryAuth(SpecModel):
    registry: RegistryHost
    username: RegistryUser
    password: Secret
    insecure: bool = False
    ca_file: LocalPath | None = None


class Registry(SpecModel):
    private_registry: RegistryPrefix | None = None
    namespace_override: RepositoryPath | None = None
    auths: list[RegistryAuth] = Field(default_factory=list)
    type: Literal["none", "docker-registry"] = Field(default="none", description=(
        "docker-registry: `kubexm registry up` runs the CNCF distribution registry on the hosts of role "
        "registry, with TLS from kubexm's PKI and the users of the auths entry for its address"))
    port: Annotated[int, Field(ge=1, le=65535)] = Field(default=5000, description="HTTPS port of that registry")
    data_dir: AbsPath = Field(default="/var/lib/docker-registry", description="where that registry stores images")


class Addon(SpecModel):
    structured_fields: ClassVar[frozenset[str]] = frozenset({"values"})

    name: DnsLabel
    enabled: bool = True
    namespace: DnsLabel = "default"
    chart: ChartRef | None = None
    repo: Url | None = None
    version: Version | None = None
    values: dict[str, object] = Field(default_factory=dict)
    manifests: list[ManifestSource] = Field(default_factory=list)


class DNS(SpecModel):
    """CoreDNS comes with kubeadm; NodeLocal DNSCache is optional (a caching agent on every node)."""

    nodelocaldns: bool = False
    nodelocaldns_ip: IPAddress = "169.254.25.10"
    nodelocaldns_version: Version = "1.23.1"
    upstream_servers: list[DnsUpstream] = Field(default_factory=list,
                                                description="instead of the nodes' /etc/resolv.conf")


class NFSStorage(SpecModel):
    server: Address
    path: AbsPath
    version: Version = "4.0.18"


class LocalPathStorage(SpecModel):
    enabled: bool = True
    path: AbsPath = "/opt/local-path-provisioner"
    version: Version = "v0.0.30"


class Storage(SpecModel):
    """Storage provisioners; ``default_class`` names the StorageClass marked as the cluster default."""

    local_path: LocalPathStorage = Field(default_factory=LocalPathStorage)
    nfs: NFSStorage | None = None
    openebs: bool = False
    longhorn: bool = False
    default_class: Literal["local-path", "nfs-client", "openebs-hostpath", "longhorn", "none"] = "local-path"


class System(SpecModel):
    ntp_servers: list[NtpServer] = Field(default_factory=list)
    timezone: Timezone | None = None
    sysctl: dict[SysctlKey, SysctlValue] = Field(default_factory=dict)
    packages: list[PackageName] = Field(default_factory=list)
    firewall: Literal["disable", "open-ports", "keep"] = "disable"


class Preflight(SpecModel):
    """Thresholds of PreflightChecks; defaults follow kubeadm's own minimums."""

    min_cpu_control_plane: int = 2
    min_cpu_worker: int = 1
    min_memory_mb_control_plane: int = 1700
    min_memory_mb_worker: int = 1000
    max_clock_skew_seconds: float = 5.0


class CertAutoRenew(SpecModel):
    """A systemd timer on control-plane and etcd nodes renewing certificates before they expire."""

    enabled: bool = False
    before_days: Annotated[int, Field(ge=1, le=365, description="renew what expires within this many days")] = 30
    on_calendar: Schedule = Field(default="weekly", description="systemd OnCalendar= of the check")


class PKISettings(SpecModel):
    """How kubexm issues certificates (existing CAs are always reused, whatever these say)."""

    key_type: Literal["rsa", "ecdsa"] = "rsa"
    ca_validity_days: Annotated[int, Field(ge=1, le=36500)] = 3650
    cert_validity_days: Annotated[int, Field(ge=1, le=3650)] = 365
    auto_renew: CertAutoRenew = Field(default_factory=CertAutoRenew)


class Assets(SpecModel):
    """Where component files come from: a local source (air-gapped), or downloads via an optional mirror."""

    local_source: LocalPath | None = Field(default=None, description="directory with manifest.yaml; replaces downloads")
    mirror: Url | None = Field(default=None, description="URL prefix replacing upstream hosts, e.g. a China mirror")
    checksums: dict[Identifier, dict[Version, dict[Identifier, Sha256]]] = Field(
        default_factory=dict, description="component -> version -> arch -> sha256, for versions not in the catalog")
    relay: bool = Field(default=False, description=(
        "nodes pass release files on to each other (TCP port 47123 between nodes, socat on the nodes), so the "
        "deploy machine sends each file about twice instead of once per node; checksums verified at every hop, "
        "direct upload where a hop fails"))


# ISO 4217 codes of the currencies cloud and hosting providers bill in; a Literal, so a typo is an error.
Currency = Literal["USD", "EUR", "GBP", "CNY", "JPY", "KRW", "INR", "CAD", "AUD", "NZD", "CHF", "SEK", "NOK", "DKK",
                   "PLN", "CZK", "HKD", "SGD", "TWD", "BRL", "MXN", "ZAR", "RUB", "TRY", "AED", "ILS", "IDR", "THB"]
Price = Annotated[float, Field(ge=0, le=1e9)]


class InstancePrice(SpecModel):
    name: Identifier = Field(description="an instanceType of spec.hosts")
    monthly: Price


class Cost(SpecModel):
    """Monthly prices for `kubexm plan`'s estimate: per instance type, else the default per host."""

    currency: Currency = "USD"
    default_monthly: Price | None = Field(default=None, description="price of a host with no priced instanceType")
    instance_types: list[InstancePrice] = Field(default_factory=list)

    @field_validator("instance_types")
    @classmethod
    def _unique(cls, value: list[InstancePrice]) -> list[InstancePrice]:
        names = [p.name for p in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"instance type {', '.join(twice)} priced twice")
        return value

    def price_of(self, instance_type: str | None) -> float | None:
        """The monthly price of a host of this type: its own, else the default; None when neither is set."""
        own = next((p.monthly for p in self.instance_types if p.name == instance_type), None)
        return own if own is not None else self.default_monthly


class ClusterSpec(SpecModel):
    hosts: list[Host]
    bastions: list[Bastion] = Field(default_factory=list)
    role_groups: RoleGroups = Field(default_factory=RoleGroups)
    control_plane_endpoint: ControlPlaneEndpoint = Field(default_factory=ControlPlaneEndpoint)
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)
    etcd: Etcd = Field(default_factory=Etcd)
    container_runtime: ContainerRuntime = Field(default_factory=ContainerRuntime)
    network: Network = Field(default_factory=Network)
    registry: Registry = Field(default_factory=Registry)
    addons: list[Addon] = Field(default_factory=list)
    dns: DNS = Field(default_factory=DNS)
    storage: Storage = Field(default_factory=Storage)
    system: System = Field(default_factory=System)
    preflight: Preflight = Field(default_factory=Preflight)
    assets: Assets = Field(default_factory=Assets)
    pki: PKISettings = Field(default_factory=PKISettings)
    cost: Cost | None = None


class Metadata(SpecModel):
    name: ClusterName
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)


class Cluster(SpecModel):
    api_version: Literal["kubexm.io/v1alpha1"]
    kind: Literal["Cluster"]
    metadata: Metadata
    spec: ClusterSpec
    _hosts_index: dict[str, Host] = PrivateAttr(default_factory=dict)
    _hosts_key: tuple[int, int] = PrivateAttr(default=(0, -1))

    @property
    def name(self) -> str:
        return self.metadata.name

    def host(self, name: str) -> Host:
        hosts = self.spec.hosts
        key = (id(hosts), len(hosts))
        if key != self._hosts_key:  # rebuilt when the list is replaced or changes length (see RoleGroups)
            self._hosts_index, self._hosts_key = {h.name: h for h in reversed(hosts)}, key
        host = self._hosts_index.get(name)
        if host is None or host.name != name:
            for host in hosts:  # renamed in place since the index was built: the list is the truth
                if host.name == name:
                    return host
            raise KeyError(name)
        return host

    def roles_of(self, host: str) -> list[str]:
        return self.spec.role_groups.roles_of(host)

    def hosts_with_role(self, role: str) -> list[Host]:
        wanted = set(self.spec.role_groups.members(role))
        return [h for h in self.spec.hosts if h.name in wanted]
