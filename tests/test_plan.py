"""lib.plan: which writes a run makes, given the desired state and the live objects."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lib import desired, plan
from lib.config import Config
from lib.desired import select
from lib.nodes import slim
from lib.plan import Live

FM = "kubelet-endpoints-reconciler"


def node(name: str, *ips: str, ready: str = "True", created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": created},
        "status": {
            "conditions": [{"type": "Ready", "status": ready}],
            "addresses": [{"type": "InternalIP", "address": ip} for ip in ips],
        },
    }


def selection(*nodes: dict[str, Any]) -> desired.Selection:
    return select([slim(n) for n in nodes], "internal")


def stored(body: dict[str, Any], rv: str = "7", manager: str = FM, **extra: Any) -> dict[str, Any]:
    """``body`` as a server would return it after our apply: managedFields, rv, uid, defaults."""
    obj = copy.deepcopy(body)
    obj["metadata"].update(
        resourceVersion=rv,
        uid=f"uid-{obj['metadata']['name']}",
        managedFields=[{"manager": manager, "operation": "Apply", "fieldsV1": {}}],
    )
    for key, value in extra.items():
        obj[key] = value
    return obj


# --- up_to_date ----------------------------------------------------------------

SERVICE = desired.service(Config())
SERVICE_WITH_DEFAULTS = stored(SERVICE)
SERVICE_WITH_DEFAULTS["spec"].update(type="ClusterIP", sessionAffinity="None")
for port in SERVICE_WITH_DEFAULTS["spec"]["ports"]:
    port["targetPort"] = port["port"]


def _without_manager() -> dict[str, Any]:
    obj = stored(SERVICE)
    obj["metadata"]["managedFields"] = [{"manager": "prometheus-operator", "operation": "Update"}]
    return obj


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    obj = stored(SERVICE)
    node_: Any = obj
    for key in path[:-1]:
        node_ = node_.setdefault(key, {})
    node_[path[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("live", "expected"),
    [
        pytest.param(None, False, id="absent"),
        pytest.param(stored(SERVICE), True, id="exactly-ours"),
        pytest.param(SERVICE_WITH_DEFAULTS, True, id="server-defaults-are-not-a-difference"),
        pytest.param(_without_manager(), False, id="never-applied-by-us"),
        pytest.param(_with(("metadata", "labels", "k8s-app"), "other"), False, id="label-changed"),
        pytest.param(_with(("metadata", "labels", "extra"), "x"), True, id="someone-elses-label"),
        pytest.param(_with(("spec", "ports"), SERVICE["spec"]["ports"][:1]), False, id="port-missing"),
        pytest.param(
            _with(("spec", "ports"), [{**p, "port": p["port"] + 1} for p in SERVICE["spec"]["ports"]]),
            False,
            id="port-changed",
        ),
        pytest.param(
            _with(("metadata", "annotations", desired.OVER_CAPACITY), "truncated"),
            False,
            id="annotation-we-stopped-setting",
        ),
        pytest.param(
            _with(("metadata", "labels", desired.SKIP_MIRROR), "true"), False, id="label-we-stopped-setting"
        ),
        pytest.param(_with(("subsets",), [{"addresses": [{"ip": "10.0.0.1"}]}]), False, id="subsets-left"),
    ],
)
def test_up_to_date(live: dict[str, Any] | None, expected: bool) -> None:
    assert plan.up_to_date(live, SERVICE, FM) is expected


def test_up_to_date_ignores_the_precondition_resource_version() -> None:
    body = copy.deepcopy(SERVICE)
    body["metadata"]["resourceVersion"] = "1"
    assert plan.up_to_date(stored(SERVICE, rv="9"), body, FM)


# --- live IPs and the empty-set guard ------------------------------------------


def _slice(name: str, *ips: str, manager: str = FM, family: str = "IPv4", rv: str = "3") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": rv,
            "labels": {desired.SERVICE_NAME_LABEL: "kubelet", desired.SLICE_MANAGED_BY: manager},
            "managedFields": [{"manager": manager, "operation": "Apply"}],
        },
        "addressType": family,
        "endpoints": [{"addresses": [ip]} for ip in ips],
    }


def _endpoints(*ips: str) -> dict[str, Any]:
    return {"metadata": {"name": "kubelet"}, "subsets": [{"addresses": [{"ip": ip} for ip in ips]}]}


@pytest.mark.parametrize(
    ("resources", "live", "expected"),
    [
        pytest.param(("endpoints", "endpointslices"), Live(), set(), id="nothing-live"),
        pytest.param(
            ("endpoints", "endpointslices"),
            Live(endpoints=_endpoints("10.0.0.1"), slices=(_slice("kubelet-ipv4-0", "10.0.0.2"),)),
            {"10.0.0.1", "10.0.0.2"},
            id="union-of-both",
        ),
        pytest.param(
            ("endpoints",),
            Live(endpoints=_endpoints("10.0.0.1"), slices=(_slice("kubelet-ipv4-0", "10.0.0.2"),)),
            {"10.0.0.1"},
            id="only-managed-kinds",
        ),
        pytest.param(
            ("endpointslices",),
            Live(slices=(_slice("kubelet-abcde", "10.0.0.3", manager="prometheus-operator"),)),
            set(),
            id="foreign-slices-are-not-ours",
        ),
        pytest.param(
            ("endpointslices",),
            Live(slices=(_slice("kubelet-ipv6-0", "fd00:0::1", family="IPv6"),)),
            {"fd00::1"},
            id="canonical-form",
        ),
    ],
)
def test_live_ips(resources: tuple[str, ...], live: Live, expected: set[str]) -> None:
    assert {str(ip) for ip in plan.live_ips(Config(resources=resources), live)} == expected


@pytest.mark.parametrize(
    ("nodes", "live", "trips"),
    [
        pytest.param([], Live(endpoints=_endpoints("10.0.0.1")), True, id="no-nodes-over-live-set"),
        pytest.param(
            [node("a", "10.0.0.1", ready="False")],
            Live(endpoints=_endpoints("10.0.0.1")),
            True,
            id="none-ready",
        ),
        pytest.param(
            [node("a", "::1")], Live(endpoints=_endpoints("10.0.0.1")), True, id="only-unusable-ips"
        ),
        pytest.param([], Live(), False, id="empty-over-empty"),
        pytest.param([node("a", "10.0.0.9")], Live(endpoints=_endpoints("10.0.0.1")), False, id="non-empty"),
    ],
)
def test_empty_set_guard(nodes: list[dict[str, Any]], live: Live, trips: bool) -> None:
    assert plan.empties_live_set(Config(), selection(*nodes), live) is trips


# --- slices ----------------------------------------------------------------------


def _applied(cfg: Config, sel: desired.Selection, uid: str | None = "svc-uid") -> tuple[dict[str, Any], ...]:
    """The slices as stored after a first run from nothing."""
    sp = plan.slices(cfg, sel, (), uid)
    assert not sp.shrink and not sp.deletes
    return tuple(stored(a.body, rv=str(i + 1)) for i, a in enumerate(sp.grow))


def test_first_run_creates_one_slice_per_family_without_preconditions() -> None:
    sel = selection(node("a", "10.0.0.1", "fd00::1"), node("b", "10.0.0.2"))
    sp = plan.slices(Config(), sel, (), "svc-uid")
    assert [(a.name, a.body["addressType"]) for a in sp.grow] == [
        ("kubelet-ipv4-0", "IPv4"),
        ("kubelet-ipv6-0", "IPv6"),
    ]
    assert all("resourceVersion" not in a.body["metadata"] for a in sp.grow)
    assert sp.grow[0].body["metadata"]["ownerReferences"][0]["uid"] == "svc-uid"
    assert [ep["addresses"] for ep in sp.grow[0].body["endpoints"]] == [["10.0.0.1"], ["10.0.0.2"]]


def test_unchanged_slices_need_no_write() -> None:
    cfg = Config(max_endpoints_per_slice=2)
    sel = selection(*(node(f"n{i}", f"10.0.0.{i}") for i in range(1, 6)))
    sp = plan.slices(cfg, sel, _applied(cfg, sel), "svc-uid")
    assert sp.writes == 0


def test_one_node_gone_rewrites_one_slice_with_its_resource_version() -> None:
    cfg = Config(max_endpoints_per_slice=2)
    nodes = [node(f"n{i}", f"10.0.0.{i}") for i in range(1, 6)]
    live = _applied(cfg, selection(*nodes))
    sp = plan.slices(cfg, selection(*nodes[:2], *nodes[3:]), live, "svc-uid")
    assert [a.name for a in sp.shrink] == ["kubelet-ipv4-1"] and not sp.grow and not sp.deletes
    assert sp.shrink[0].body["metadata"]["resourceVersion"] == "2"


def test_emptied_slice_is_deleted_with_a_precondition() -> None:
    cfg = Config(max_endpoints_per_slice=2)
    nodes = [node(f"n{i}", f"10.0.0.{i}") for i in range(1, 4)]
    live = _applied(cfg, selection(*nodes))
    sp = plan.slices(cfg, selection(*nodes[:2]), live, "svc-uid")
    assert sp.deletes == (plan.Delete("kubelet-ipv4-1", "2"),)
    assert not sp.shrink and not sp.grow


def test_reused_ip_rewrites_the_slice_in_place() -> None:
    old = node("a", "1.2.3.4", created="2026-01-01T00:00:00Z")
    new = node("b", "1.2.3.4", created="2026-02-01T00:00:00Z")
    cfg = Config()
    live = _applied(cfg, selection(old))
    sp = plan.slices(cfg, selection(old, new), live, "svc-uid")
    assert [a.name for a in sp.shrink] == ["kubelet-ipv4-0"]
    assert sp.shrink[0].body["endpoints"][0]["nodeName"] == "b"


def test_foreign_slices_are_reported_and_their_names_never_reused() -> None:
    foreign = _slice("kubelet-ipv4-0", "10.0.0.1", manager="prometheus-operator")
    sp = plan.slices(Config(), selection(node("a", "10.0.0.1")), (foreign,), "svc-uid")
    assert sp.foreign == ("kubelet-ipv4-0",)
    assert [a.name for a in sp.grow] == ["kubelet-ipv4-1"]
    assert not sp.deletes


def test_our_slice_of_another_address_type_is_deleted() -> None:
    fqdn = _slice("kubelet-fqdn-0", "example.com", family="FQDN", rv="4")
    sp = plan.slices(Config(), selection(node("a", "10.0.0.1")), (fqdn,), None)
    assert sp.deletes == (plan.Delete("kubelet-fqdn-0", "4"),)
    assert "ownerReferences" not in sp.grow[0].body["metadata"]
