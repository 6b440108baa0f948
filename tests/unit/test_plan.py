"""lib.plan and lib.live: which writes a run makes, given the desired state and the live objects."""

from __future__ import annotations

import copy
import json
import tracemalloc
from typing import Any

import pytest

from lib import desired, plan
from lib.config import Config
from lib.live import Live, LiveObject, view
from tests.unit.node_of import node_raw

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
    return desired.select(node_raw(n) for n in nodes)


#: Granular lists of our kinds and their keys (SSA's schema); every other list is atomic.
_MAP_LISTS = {("spec", "ports"): ("port", "protocol"), ("metadata", "ownerReferences"): ("uid",)}
_ATOMIC_ITEMS = {("metadata", "ownerReferences")}


def fields_v1(value: Any, path: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fieldsV1 a real API server records for an apply of ``value`` (shapes as seen on v1.24)."""
    out: dict[str, Any] = {}
    for key, sub in value.items():
        here = (*path, key)
        if here in (("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")):
            continue
        if here == ("metadata", "resourceVersion"):
            continue
        if isinstance(sub, dict):
            out[f"f:{key}"] = fields_v1(sub, here)
        elif isinstance(sub, list) and here in _MAP_LISTS:
            items = {}
            for item in sub:
                k = "k:" + json.dumps({n: item[n] for n in _MAP_LISTS[here]}, separators=(",", ":"))
                items[k] = {} if here in _ATOMIC_ITEMS else {".": {}, **fields_v1(item, (*here, "*"))}
            out[f"f:{key}"] = items
        else:
            out[f"f:{key}"] = {}
    return out


def stored(
    body: dict[str, Any], rv: str = "7", manager: str = FM, kind: str | None = None, **extra: Any
) -> LiveObject:
    """``body`` as a server holds it after our apply (managedFields, rv, uid), slimmed."""
    obj = copy.deepcopy(body)
    obj["metadata"].pop("resourceVersion", None)
    fields = fields_v1(obj)
    obj["metadata"].update(
        resourceVersion=rv,
        uid=f"uid-{obj['metadata']['name']}",
        managedFields=[
            {"manager": manager, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": fields}
        ],
    )
    obj.update(extra)
    return view(obj, kind or str(body["kind"]), FM)


def raw(live: LiveObject) -> dict[str, Any]:
    return copy.deepcopy(dict(live.raw))


# --- would_change --------------------------------------------------------------

SERVICE = desired.service(Config())


def _defaulted() -> LiveObject:
    obj = raw(stored(SERVICE))
    obj["spec"].update(type="ClusterIP", sessionAffinity="None")
    for port in obj["spec"]["ports"]:
        port["targetPort"] = port["port"]
    return view(obj, "Service", FM)


def _listed() -> LiveObject:
    obj = raw(stored(SERVICE))
    del obj["apiVersion"], obj["kind"]  # a real list response's items
    return view(obj, "Service", FM)


def _without_manager() -> LiveObject:
    obj = raw(stored(SERVICE))
    obj["metadata"]["managedFields"] = [
        {"manager": "prometheus-operator", "operation": "Update", "fieldsV1": {}}
    ]
    return view(obj, "Service", FM)


def _with(path: tuple[str, ...], value: Any, owned: bool = False) -> LiveObject:
    """Our stored Service with ``value`` at ``path``: owned by us (we once set it) or by another manager."""
    obj = raw(stored(SERVICE))
    node_: Any = obj
    for key in path[:-1]:
        node_ = node_.setdefault(key, {})
    node_[path[-1]] = value
    if owned:
        obj["metadata"]["managedFields"][0]["fieldsV1"] = fields_v1(obj)
    return view(obj, "Service", FM)


def _foreign_port() -> LiveObject:
    """prometheus-operator's http-metrics port survives our forced apply (Service ports are a map list)."""
    obj = raw(stored(SERVICE))
    obj["spec"]["ports"].append(
        {"name": "http-metrics", "port": 10255, "protocol": "TCP", "targetPort": 10255}
    )
    obj["metadata"]["managedFields"].append(
        {
            "manager": "prometheus-operator",
            "operation": "Update",
            "fieldsV1": {
                "f:spec": {"f:ports": {'k:{"port":10255,"protocol":"TCP"}': {".": {}, "f:name": {}}}}
            },
        }
    )
    return view(obj, "Service", FM)


@pytest.mark.parametrize(
    ("live", "changes"),
    [
        pytest.param(stored(SERVICE), False, id="exactly-ours"),
        pytest.param(_defaulted(), False, id="server-defaults-are-not-a-difference"),
        pytest.param(_listed(), False, id="list-item-without-apiVersion-and-kind"),
        pytest.param(_foreign_port(), False, id="another-managers-port"),
        pytest.param(_without_manager(), True, id="never-applied-by-us"),
        pytest.param(_with(("metadata", "labels", "k8s-app"), "other"), True, id="label-changed"),
        pytest.param(_with(("metadata", "labels", "extra"), "x"), False, id="someone-elses-label"),
        pytest.param(
            _with(("spec", "ports"), SERVICE["spec"]["ports"][:1], owned=True), True, id="port-missing"
        ),
        pytest.param(
            _with(
                ("spec", "ports"),
                [{**p, "port": p["port"] + 1} for p in SERVICE["spec"]["ports"]],
                owned=True,
            ),
            True,
            id="port-changed",
        ),
        pytest.param(
            _with(("metadata", "annotations"), {desired.OVER_CAPACITY: "truncated"}, owned=True),
            True,
            id="annotation-we-stopped-setting",
        ),
        pytest.param(
            _with(("metadata", "labels", desired.SKIP_MIRROR), "true", owned=True),
            True,
            id="label-we-stopped-setting",
        ),
        pytest.param(
            _with(("subsets",), [{"addresses": [{"ip": "10.0.0.1"}]}], owned=True), True, id="field-left-over"
        ),
    ],
)
def test_would_change(live: LiveObject, changes: bool) -> None:
    assert live.would_change(SERVICE) is changes


def test_would_change_ignores_the_precondition_resource_version() -> None:
    body = copy.deepcopy(SERVICE)
    body["metadata"]["resourceVersion"] = "1"
    assert not stored(SERVICE, rv="9").would_change(body)


def test_foreign_fields_are_those_others_own_and_we_do_not_set() -> None:
    (port,) = _foreign_port().foreign(SERVICE)
    assert port.describe() == 'spec.ports[{"port":10255,"protocol":"TCP"}]'
    assert port.managers == ("prometheus-operator",) and port.value["name"] == "http-metrics"
    # Once we publish that port too, it is no longer foreign.
    assert _foreign_port().foreign(desired.service(Config(http_metrics=True))) == ()
    assert stored(SERVICE).foreign(SERVICE) == ()


def _created_by(
    manager: str, fields: dict[str, Any], meta: dict[str, Any] | None = None, **spec: Any
) -> LiveObject:
    """Our stored Service with ``spec`` set and ``fields`` owned by ``manager`` (a plain create, say)."""
    obj = raw(stored(SERVICE))
    obj["spec"].update(spec)
    obj["metadata"].update(meta or {})
    obj["metadata"]["managedFields"].append({"manager": manager, "operation": "Update", "fieldsV1": fields})
    return view(obj, "Service", FM)


_SERVER_DEFAULTS = {
    "type": "ClusterIP",
    "sessionAffinity": "None",
    "internalTrafficPolicy": "Cluster",
    "clusterIPs": ["None"],
    "ipFamilies": ["IPv4", "IPv6"],
    "ipFamilyPolicy": "RequireDualStack",
}


@pytest.mark.parametrize(
    ("fields", "spec", "meta", "foreign"),
    [
        pytest.param({"f:spec": {"f:selector": {}, **{f"f:{k}": {} for k in _SERVER_DEFAULTS}}},
                     {"selector": {"app": "x"}, **_SERVER_DEFAULTS}, {}, ["spec.selector"],
                     id="a-selector-not-what-the-server-sets"),
        pytest.param({"f:spec": {"f:publishNotReadyAddresses": {}, "f:externalIPs": {},
                                 "f:ports": {'k:{"port":10250,"protocol":"TCP"}': {}}}},
                     {"publishNotReadyAddresses": True, "externalIPs": ["192.0.2.1"]}, {},
                     ["spec.externalIPs", "spec.publishNotReadyAddresses"],
                     id="any-field-of-spec-not-ours-too"),
        pytest.param({"f:metadata": {"f:finalizers": {'v:"example.com/keep"': {}}, "f:generateName": {},
                                     "f:labels": {".": {}, "f:k8s-app": {}}}}, {},
                     {"finalizers": ["example.com/keep"], "generateName": "x-"}, ["metadata.finalizers"],
                     id="finalizers-not-identity-nor-a-map-itself"),
        pytest.param({"f:metadata": {"f:ownerReferences": {'k:{"uid":"u1"}': {}}},
                      "f:status": {"f:loadBalancer": {}}},
                     {}, {"ownerReferences": [{"kind": "Application", "name": "a", "uid": "u1"}]},
                     ['metadata.ownerReferences[{"uid":"u1"}]'], id="an-owner-not-status"),
    ],
)  # fmt: skip
def test_foreign_fields_are_every_field_another_manager_owns_but_what_the_server_sets(
    fields: dict[str, Any], spec: dict[str, Any], meta: dict[str, Any], foreign: list[str]
) -> None:
    live = _created_by("helm", fields, meta, **spec)
    found = live.foreign(SERVICE)
    assert [f.describe() for f in found] == foreign
    assert all(f.managers == ("helm",) for f in found)


def test_removal_of_whole_fields_removes_them_by_path() -> None:
    live = _created_by("helm", {"f:spec": {"f:selector": {}, "f:sessionAffinity": {}}}, selector={"a": "b"})
    assert live.removal(live.foreign(SERVICE)) == (
        {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
        {"op": "remove", "path": "/spec/selector"},
    )
    endpoints = {"metadata": {"name": "kubelet", "resourceVersion": "3", "managedFields": [
        {"manager": "prometheus-operator", "operation": "Update", "fieldsV1": {"f:subsets": {}}}]},
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]}  # fmt: skip
    ep = view(endpoints, "Endpoints", FM)
    # An empty published set (no subsets in our body): the operator's subsets would survive our apply.
    body = desired.endpoints(Config(), selection()).body
    assert [f.describe() for f in ep.foreign(body)] == ["subsets"]
    assert ep.removal(ep.foreign(body))[1] == {"op": "remove", "path": "/subsets"}


@pytest.mark.parametrize(
    ("spec", "conflict"),
    [
        pytest.param({"clusterIP": "10.96.0.10", "type": "ClusterIP"}, ("spec.clusterIP", "10.96.0.10"),
                     id="allocated-cluster-ip"),
        pytest.param({"clusterIP": "10.96.0.10", "type": "NodePort"}, ("spec.clusterIP", "10.96.0.10"),
                     id="node-port"),
        pytest.param({"type": "ExternalName", "externalName": "x.example"}, ("spec.type", "ExternalName"),
                     id="external-name"),
        pytest.param({"clusterIP": "None", "type": "ClusterIP"}, None, id="headless"),
        pytest.param({"clusterIP": "None"}, None, id="headless-no-type"),
    ],
)  # fmt: skip
def test_a_service_that_cannot_be_our_headless_one_is_refused_before_any_write(
    spec: dict[str, Any], conflict: tuple[str, str] | None
) -> None:
    obj = raw(stored(SERVICE))
    obj["spec"] = {**{k: v for k, v in obj["spec"].items() if k != "clusterIP"}, **spec}
    obj["metadata"]["managedFields"] = [{"manager": "helm", "operation": "Update", "fieldsV1": {}}]
    live = view(obj, "Service", FM)
    assert live.not_headless() == conflict
    p = plan.build(Config(take_over=True), selection(node("a", "10.0.0.1")), Live(service=live))
    if conflict is None:
        assert p.refused is None and p.steps
    else:
        assert p.steps == () and p.refused is not None
        assert f"belongs to someone else (field managers: helm): its {conflict[0]} is {conflict[1]!r}" in (
            p.refused
        )


# --- live IPs and the empty-set guard ------------------------------------------


def _slice(name: str, *ips: str, manager: str = FM, family: str = "IPv4", rv: str = "3") -> LiveObject:
    obj = {
        "metadata": {
            "name": name,
            "resourceVersion": rv,
            "labels": {desired.SERVICE_NAME_LABEL: "kubelet", desired.SLICE_MANAGED_BY: manager},
            "managedFields": [{"manager": manager, "operation": "Apply", "fieldsV1": {}}],
        },
        "addressType": family,
        "endpoints": [{"addresses": [ip]} for ip in ips],
    }
    return view(obj, "EndpointSlice", FM)


def _endpoints(*ips: str) -> LiveObject:
    obj = {"metadata": {"name": "kubelet"}, "subsets": [{"addresses": [{"ip": ip} for ip in ips]}]}
    return view(obj, "Endpoints", FM)


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
    cfg = Config(resources=resources)
    assert {str(ip) for ip in live.published(cfg.manages_endpoints, cfg.manages_slices)} == expected


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
    assert bool(plan.build(Config(), selection(*nodes), live).empties) is trips


OPERATOR_SLICE = _slice("kubelet-abcde", "10.0.0.1", "10.0.0.2", manager="prometheus-operator")


@pytest.mark.parametrize(
    ("flags", "live", "lost"),
    [
        # --take-over would delete the operator's slices: Prometheus loses their IPs too.
        pytest.param({"take_over": True}, Live(slices=(OPERATOR_SLICE,)), 2, id="take-over-foreign-only"),
        pytest.param(
            {"take_over": True},
            Live(slices=(OPERATOR_SLICE, _slice("kubelet-ipv4-0", "10.0.0.2", "10.0.0.3"))),
            3,
            id="take-over-foreign-and-ours",
        ),
        # Without --take-over the operator's slices stay: nothing of theirs is lost.
        pytest.param({}, Live(slices=(OPERATOR_SLICE,)), 0, id="foreign-left-alone"),
        pytest.param(
            {"take_over": True, "resources": ("endpoints",)},
            Live(slices=(OPERATOR_SLICE,)),
            0,
            id="slices-not-managed",
        ),
    ],
)
def test_the_empty_set_guard_counts_what_prometheus_would_lose_whoever_published_it(
    flags: dict[str, Any], live: Live, lost: int
) -> None:
    cfg = Config(**{"resources": SLICES_ONLY, **flags})
    assert plan.build(cfg, selection(), live).empties == lost


# --- slices ----------------------------------------------------------------------

SLICES_ONLY = ("endpointslices",)


def steps(cfg: Config, sel: desired.Selection, slices: tuple[LiveObject, ...] = ()) -> list[plan.Step]:
    """The plan's steps for the slices alone, with our Service (uid "uid-kubelet") up to date."""
    cfg = Config(**{**cfg.__dict__, "resources": SLICES_ONLY})
    p = plan.build(cfg, sel, Live(service=stored(desired.service(cfg)), slices=slices))
    assert p.complete
    return list(p.steps)


def applies(ss: list[plan.Step]) -> list[plan.Apply]:
    return [s for s in ss if isinstance(s, plan.Apply)]


def _applied(cfg: Config, sel: desired.Selection) -> tuple[LiveObject, ...]:
    """The slices as stored after a first run from nothing."""
    ss = steps(cfg, sel)
    assert all(isinstance(s, plan.Apply) for s in ss)
    return tuple(stored(a.body, rv=str(i + 1)) for i, a in enumerate(applies(ss)))


def test_first_run_creates_one_slice_per_family_without_preconditions() -> None:
    sel = selection(node("a", "10.0.0.1", "fd00::1"), node("b", "10.0.0.2"))
    grow = applies(steps(Config(), sel))
    assert [(a.name, a.body["addressType"]) for a in grow] == [
        ("kubelet-ipv4-0", "IPv4"),
        ("kubelet-ipv6-0", "IPv6"),
    ]
    assert all("resourceVersion" not in a.body["metadata"] for a in grow)
    assert grow[0].body["metadata"]["ownerReferences"][0]["uid"] == "uid-kubelet"
    assert [ep["addresses"] for ep in grow[0].body["endpoints"]] == [["10.0.0.1"], ["10.0.0.2"]]


def test_a_missing_service_is_applied_first_and_the_rest_planned_with_its_uid() -> None:
    p = plan.build(Config(), selection(node("a", "10.0.0.1")), Live())
    assert not p.complete and [(s.kind, s.name) for s in applies(list(p.steps))] == [("Service", "kubelet")]


def test_unchanged_slices_need_no_write() -> None:
    cfg = Config(max_endpoints_per_slice=2)
    sel = selection(*(node(f"n{i}", f"10.0.0.{i}") for i in range(1, 6)))
    assert steps(cfg, sel, _applied(cfg, sel)) == []


def test_unchanged_slices_read_by_list_need_no_write() -> None:
    """A real list response's items carry no apiVersion and kind (every slice was re-applied)."""
    cfg = Config(max_endpoints_per_slice=2)
    sel = selection(*(node(f"n{i}", f"10.0.0.{i}") for i in range(1, 6)))
    listed = []
    for s in _applied(cfg, sel):
        obj = raw(s)
        del obj["apiVersion"], obj["kind"]
        listed.append(view(obj, "EndpointSlice", FM))
    assert steps(cfg, sel, tuple(listed)) == []


def test_one_node_gone_rewrites_one_slice_with_its_resource_version() -> None:
    cfg = Config(max_endpoints_per_slice=2)
    nodes = [node(f"n{i}", f"10.0.0.{i}") for i in range(1, 6)]
    live = _applied(cfg, selection(*nodes))
    ss = steps(cfg, selection(*nodes[:2], *nodes[3:]), live)
    assert [(type(s).__name__, s.name) for s in ss] == [("Apply", "kubelet-ipv4-1")]
    assert applies(ss)[0].body["metadata"]["resourceVersion"] == "2"


def test_emptied_slice_is_deleted_with_a_precondition() -> None:
    cfg = Config(max_endpoints_per_slice=2)
    nodes = [node(f"n{i}", f"10.0.0.{i}") for i in range(1, 4)]
    live = _applied(cfg, selection(*nodes))
    assert steps(cfg, selection(*nodes[:2]), live) == [plan.Delete("kubelet-ipv4-1", "2")]


@pytest.mark.parametrize(
    ("desired", "live", "added", "removed"),
    [
        ((), (), [], []),
        (("10.0.0.1",), (), ["10.0.0.1"], []),
        ((), ("10.0.0.1",), [], ["10.0.0.1"]),
        (("10.0.0.1", "10.0.0.2"), ("10.0.0.2", "10.0.0.3"), ["10.0.0.1"], ["10.0.0.3"]),
        (("fd00::1", "10.0.0.10", "10.0.0.9"), (), ["10.0.0.9", "10.0.0.10", "fd00::1"], []),
        (("fd00:0::1",), ("fd00::1",), [], []),
    ],
)
def test_changes_name_the_ips_added_and_removed_in_address_order(
    desired: tuple[str, ...], live: tuple[str, ...], added: list[str], removed: list[str]
) -> None:
    sel = selection(*(node(f"n{i}", ip) for i, ip in enumerate(desired)))
    got = plan.changes(Config(), sel, Live(endpoints=_endpoints(*live)))
    assert (got.added, got.removed) == (added, removed)


def test_reused_ip_rewrites_the_slice_in_place() -> None:
    old = node("a", "1.2.3.4", created="2026-01-01T00:00:00Z")
    new = node("b", "1.2.3.4", created="2026-02-01T00:00:00Z")
    cfg = Config()
    live = _applied(cfg, selection(old))
    ss = applies(steps(cfg, selection(old, new), live))
    assert [a.name for a in ss] == ["kubelet-ipv4-0"]
    assert ss[0].body["endpoints"][0]["nodeName"] == "b"
    changes = plan.changes(Config(resources=SLICES_ONLY), selection(old, new), Live(slices=live))
    assert changes.reassigned == [plan.Reassigned("1.2.3.4", "a", "b")] and not changes.added


def test_foreign_slices_are_reported_and_their_names_never_reused() -> None:
    foreign = _slice("kubelet-ipv4-0", "10.0.0.1", manager="prometheus-operator")
    cfg = Config(resources=SLICES_ONLY)
    p = plan.build(cfg, selection(node("a", "10.0.0.1")), Live(service=stored(SERVICE), slices=(foreign,)))
    assert [w.fields["names"] for w in p.warnings if w.event == "foreign_endpointslices"] == [
        ["kubelet-ipv4-0"]
    ]
    assert [(type(s).__name__, s.name) for s in p.steps] == [("Apply", "kubelet-ipv4-1")]


def test_take_over_deletes_foreign_slices_last_with_their_version() -> None:
    foreign = _slice("kubelet-ipv4-0", "10.0.0.1", manager="prometheus-operator", rv="5")
    cfg = Config(resources=SLICES_ONLY, take_over=True)
    p = plan.build(cfg, selection(node("a", "10.0.0.1")), Live(service=stored(SERVICE), slices=(foreign,)))
    assert p.steps[-1] == plan.Delete("kubelet-ipv4-0", "5", foreign=True)
    assert [s.name for s in p.steps] == ["kubelet-ipv4-1", "kubelet-ipv4-0"]


def test_take_over_removes_foreign_fields_by_a_guarded_json_patch() -> None:
    live = _foreign_port()
    p = plan.build(Config(take_over=True, resources=SLICES_ONLY), selection(), Live(service=live))
    (remove,) = p.steps
    assert isinstance(remove, plan.Remove) and remove.fields == (
        'spec.ports[{"port":10255,"protocol":"TCP"}]',
    )
    assert remove.ops == (
        {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
        {"op": "remove", "path": "/spec/ports/2"},
    )
    # Without --take-over: a warning, and no write at all.
    p = plan.build(Config(resources=SLICES_ONLY), selection(), Live(service=live))
    assert p.steps == () and [w.event for w in p.warnings] == ["foreign_fields"]


def test_removal_escapes_label_keys_and_removes_list_items_from_the_end() -> None:
    obj = raw(_foreign_port())
    obj["metadata"]["labels"]["team/a~b"] = "x"
    obj["spec"]["ports"].insert(0, {"name": "old", "port": 1, "protocol": "TCP"})
    obj["metadata"]["managedFields"][1]["fieldsV1"]["f:metadata"] = {"f:labels": {"f:team/a~b": {}}}
    obj["metadata"]["managedFields"][1]["fieldsV1"]["f:spec"]["f:ports"]['k:{"port":1,"protocol":"TCP"}'] = {}
    live = view(obj, "Service", FM)
    ops = live.removal(live.foreign(SERVICE))
    assert [o["path"] for o in ops] == ["/metadata/resourceVersion", "/spec/ports/3", "/spec/ports/0",
                                        "/metadata/labels/team~1a~0b"]  # fmt: skip


def test_our_slice_of_another_address_type_is_deleted() -> None:
    fqdn = _slice("kubelet-fqdn-0", "example.com", family="FQDN", rv="4")
    ss = steps(Config(), selection(node("a", "10.0.0.1")), (fqdn,))
    assert ss[-1] == plan.Delete("kubelet-fqdn-0", "4")
    assert [a.name for a in applies(ss)] == ["kubelet-ipv4-0"]


def test_a_plan_holds_no_slice_body_until_it_is_written() -> None:
    # From nothing, every slice is an apply. Built up front, the bodies held
    # ~460 bytes an endpoint for the whole write phase (14 MB at 15,000
    # dual-stack nodes; 1.8 MB here, which this test then sees).

    nodes = [node(f"n{i}", f"10.1.{i // 250}.{i % 250 + 1}", f"fd00::{i + 1:x}") for i in range(2000)]
    sel = selection(*nodes)
    cfg = Config(**{**Config().__dict__, "resources": SLICES_ONLY})
    live = Live(service=stored(desired.service(cfg)))
    sel.holders, sel.ips()  # the selection's own indexes, made once per run whatever the plan
    tracemalloc.start()
    try:
        p = plan.build(cfg, sel, live)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    applies = [s for s in p.steps if isinstance(s, plan.Apply)]
    assert len(applies) == 40  # 2 x 2000 IPs, 100 a slice
    assert sum(len(a.body["endpoints"]) for a in applies) == 4000  # built when read
    assert held < 400_000, f"the plan holds {held} bytes"


# --- what the endpointslice role cannot see --------------------------------------


def _service_of(*families: str) -> LiveObject:
    obj = raw(stored(SERVICE))
    if families:
        obj["spec"]["ipFamilies"] = list(families)
    return view(obj, "Service", FM)


@pytest.mark.parametrize(
    ("families", "nodes", "unseen"),
    [
        # The API server's default for our Service: both families, IPv4 first.
        (("IPv4", "IPv6"), [node("a", "10.0.0.1"), node("b", "fd00::2")], ["b"]),
        (("IPv4", "IPv6"), [node("a", "10.0.0.1"), node("b", "10.0.0.2", "fd00::2")], []),
        (("IPv4", "IPv6"), [node("b", "fd00::2"), node("c", "fd00::3"), node("a", "10.0.0.1")], ["b", "c"]),
        # An IPv6-primary cluster: the IPv4-only node is the one missed.
        (("IPv6", "IPv4"), [node("a", "10.0.0.1"), node("b", "fd00::2")], ["a"]),
        (("IPv6",), [node("b", "fd00::2")], []),
        ((), [node("a", "10.0.0.1"), node("b", "fd00::2")], []),  # no families known: no guess
    ],
)
def test_nodes_without_an_address_of_the_services_first_family_are_named(
    families: tuple[str, ...], nodes: list[dict[str, Any]], unseen: list[str]
) -> None:
    live = Live(service=_service_of(*families), endpoints=None, slices=())
    warned = [w.fields for w in plan.build(Config(), selection(*nodes), live).warnings]
    missed = [w for w in warned if "family" in w]
    if unseen:
        assert missed == [
            {
                "nodes": unseen,
                "count": len(unseen),
                "family": families[0],
                "hint": missed[0]["hint"],
            }
        ]
        assert f"only the {families[0]} slices" in missed[0]["hint"]
    else:
        assert missed == []


def test_nodes_the_endpointslice_role_misses_are_not_reported_without_slices() -> None:
    live = Live(service=_service_of("IPv4", "IPv6"), endpoints=None, slices=())
    cfg = Config(resources=("endpoints",))
    sel = selection(node("a", "10.0.0.1"), node("b", "fd00::2"))
    assert [w.event for w in plan.build(cfg, sel, live).warnings] == []
