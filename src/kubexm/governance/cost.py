"""Cost: a monthly estimate of a cluster's hosts from a price table, and its delta against the cluster as stored.

The table is ``spec.cost`` of the cluster file or a ``--prices`` YAML file of the same shape (the file wins):
``{currency: EUR, defaultMonthly: 40, instanceTypes: [{name: m5.large, monthly: 70}]}``. A host is priced by its
``instanceType``, else at ``defaultMonthly``; a host neither prices is listed as unpriced, never guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from kubexm.errors import UsageError
from kubexm.spec.models import Cost, Host


@dataclass
class HostCost:
    host: str
    instance_type: str | None
    monthly: float | None  # None: no price for it


@dataclass
class CostEstimate:
    currency: str
    monthly: float  # the priced hosts after the change
    hosts: list[HostCost] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)
    before_monthly: float | None = None  # the cluster before the change, with the same prices; None: unknown
    baseline: str = ""  # what before_monthly priced: "as stored" (the state store), or "before the change"
    source: str = ""  # where the prices came from

    @property
    def delta(self) -> float | None:
        return None if self.before_monthly is None else round(self.monthly - self.before_monthly, 2)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["delta"] = self.delta
        return data


def load_prices(path: Path) -> Cost:
    """A --prices file: the shape of spec.cost, validated the same way."""
    try:
        data = YAML(typ="safe").load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--prices {path}: cannot read it: {exc}", hint="name a YAML price file") from None
    except YAMLError as exc:
        raise UsageError(f"--prices {path}: not YAML: {str(exc).splitlines()[0]}", hint="fix the price file") from None
    try:
        return Cost.model_validate(data if data is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise UsageError(f"--prices {path}: {where}: {err['msg']}",
                         hint="currency, defaultMonthly, instanceTypes: [{name, monthly}]") from None


def price_hosts(hosts: list[Host], prices: Cost) -> tuple[float, list[HostCost], list[str]]:
    lines = [HostCost(h.name, h.instance_type, prices.price_of(h.instance_type)) for h in hosts]
    total = round(sum(line.monthly for line in lines if line.monthly is not None), 2)
    return total, lines, [line.host for line in lines if line.monthly is None]


def estimate(after: list[Host], before: list[Host] | None, prices: Cost | None, source: str = "",
             baseline: str = "as stored") -> CostEstimate | None:
    """The monthly cost of ``after`` and, when known (``before``), of the cluster as it is."""
    if prices is None:
        return None
    total, lines, unpriced = price_hosts(after, prices)
    before_total = price_hosts(before, prices)[0] if before is not None else None
    return CostEstimate(prices.currency, total, lines, unpriced, before_total, baseline if before is not None else "",
                        source)
