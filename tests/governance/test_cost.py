"""Cost: hosts priced by instance type or the default, an unpriced host named rather than guessed, the delta
against the cluster as stored, and price files validated like the spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubexm.errors import SpecError, UsageError
from kubexm.governance.cost import estimate, load_prices
from kubexm.governance.operations import stored_cluster
from kubexm.spec.dump import dump_cluster
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.state.store import Store

SPEC = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {{name: priced}}
spec:
  hosts:
    - {{name: cp1, address: 10.0.0.1, instanceType: m5.large}}
    - {{name: w1, address: 10.0.0.2, instanceType: m5.xlarge}}
    - {{name: w2, address: 10.0.0.3{extra}}}
  roleGroups: {{etcd: [cp1], control-plane: [cp1], worker: [w1, w2]}}
{cost}"""
COST = """\
  cost:
    currency: EUR
    defaultMonthly: 20
    instanceTypes:
      - {name: m5.large, monthly: 70}
      - {name: m5.xlarge, monthly: 140.5}
"""


def cluster(cost: str = COST, extra: str = "") -> Cluster:
    return parse_cluster(SPEC.format(cost=cost, extra=extra))


def test_hosts_are_priced_by_type_else_the_default() -> None:
    c = cluster()
    assert c.spec.cost is not None
    est = estimate(c.spec.hosts, None, c.spec.cost, "spec.cost")
    assert est is not None
    assert [(h.host, h.monthly) for h in est.hosts] == [("cp1", 70.0), ("w1", 140.5), ("w2", 20.0)]
    assert (est.currency, est.monthly, est.unpriced, est.delta) == ("EUR", 230.5, [], None)


def test_a_host_no_price_covers_is_listed_not_guessed() -> None:
    c = cluster(cost=COST.replace("    defaultMonthly: 20\n", ""))
    assert c.spec.cost is not None
    est = estimate(c.spec.hosts, None, c.spec.cost)
    assert est is not None and est.monthly == 210.5 and est.unpriced == ["w2"]


def test_delta_against_the_stored_cluster_uses_the_same_prices() -> None:
    c = cluster()
    assert c.spec.cost is not None
    before = [h for h in c.spec.hosts if h.name != "w1"]
    est = estimate(c.spec.hosts, before, c.spec.cost)
    assert est is not None and est.before_monthly == 90.0 and est.delta == 140.5
    removed = estimate(before, c.spec.hosts, c.spec.cost)
    assert removed is not None and removed.delta == -140.5


def test_no_price_table_no_estimate() -> None:
    c = cluster(cost="")
    assert c.spec.cost is None and estimate(c.spec.hosts, None, None) is None


def test_stored_cluster_is_the_baseline(kubexm_home: Path) -> None:
    assert stored_cluster("priced") is None  # nothing stored, and no state database created to say so
    assert not (kubexm_home / "state.db").exists()
    old = cluster(extra=", instanceType: m5.xlarge")
    store = Store()
    try:
        store.save_cluster("priced", dump_cluster(old, secrets=False), "ok", None)
    finally:
        store.close()
    stored = stored_cluster("priced")
    assert stored is not None and [h.instance_type for h in stored.spec.hosts] == ["m5.large", "m5.xlarge", "m5.xlarge"]
    now = cluster()
    assert now.spec.cost is not None
    est = estimate(now.spec.hosts, stored.spec.hosts, now.spec.cost)
    assert est is not None and est.delta == 20.0 - 140.5


@pytest.mark.parametrize(("cost", "says"), [
    ("  cost: {currency: XXX}\n", "currency"),
    ("  cost: {defaultMonthly: -1}\n", "defaultMonthly"),
    ("  cost: {instanceTypes: [{name: a, monthly: 1}, {name: a, monthly: 2}]}\n", "priced twice"),
    ("  cost: {instanceTypes: [{name: 'A B', monthly: 1}]}\n", "name"),
])
def test_spec_cost_is_validated(cost: str, says: str) -> None:
    with pytest.raises(SpecError) as err:
        cluster(cost=cost)
    assert says in str(err.value)


def test_price_file(tmp_path: Path) -> None:
    good = tmp_path / "prices.yaml"
    good.write_text("currency: CNY\ndefaultMonthly: 300\ninstanceTypes:\n  - {name: ecs.g7.large, monthly: 450}\n")
    prices = load_prices(good)
    assert (prices.currency, prices.price_of("ecs.g7.large"), prices.price_of("other")) == ("CNY", 450, 300)
    bad = tmp_path / "bad.yaml"
    bad.write_text("currency: CNY\nmonthly: 3\n")
    with pytest.raises(UsageError) as err:
        load_prices(bad)
    assert str(bad) in err.value.message and "monthly" in err.value.message
    with pytest.raises(UsageError):
        load_prices(tmp_path / "missing.yaml")
