"""lib/desired.py: eligibility, each IP exactly once, the apply bodies, encode.

docs/behaviour.md "What it publishes": which nodes and addresses, each IP
exactly once, the objects written. The upstream prometheus-operator kubelet controller cases are
re-stated with OUR expected results: NotReady nodes are never published, the
newest node wins an IP, and the loser is excluded entirely.
"""

from __future__ import annotations

import ipaddress
import json
import tracemalloc
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib import desired
from lib.config import Config
from lib.desired import (
    ENDPOINTS_MAX_BYTES,
    IPConflict,
    Selection,
    encode,
    endpoint_slice,
    endpoints,
    service,
    slice_endpoint,
)
from lib.nodes import Node, Skip, ip_key, parse_ip
from tests.unit.node_of import node_raw

OLD = "2024-01-01T00:00:00Z"
NEW = "2024-06-01T00:00:00Z"
NEWEST = "2024-12-01T00:00:00Z"

COMMON = {
    "k8s-app": "kubelet",
    "app.kubernetes.io/name": "kubelet",
    "app.kubernetes.io/managed-by": "kubelet-endpoints-reconciler",
}
PORTS = [
    {"name": "https-metrics", "port": 10250, "protocol": "TCP"},
    {"name": "cadvisor", "port": 4194, "protocol": "TCP"},
]
HTTP_PORT = {"name": "http-metrics", "port": 10255, "protocol": "TCP"}


def node(
    name: str,
    *addresses: str | tuple[str, str],
    ready: str | None = "True",
    created: str | None = OLD,
    deleting: bool = False,
) -> dict[str, Any]:
    """A Node list item (the fields a run reads); a bare address string is an InternalIP."""
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}"}
    if created is not None:
        meta["creationTimestamp"] = created
    if deleting:
        meta["deletionTimestamp"] = NEWEST
    pairs = [("InternalIP", a) if isinstance(a, str) else a for a in addresses]
    return {
        "metadata": meta,
        "status": {
            "conditions": [] if ready is None else [{"type": "Ready", "status": ready}],
            "addresses": [{"type": t, "address": a} for t, a in pairs],
        },
    }


def select(items: list[dict[str, Any]], address_type: str = "internal") -> Selection:
    """The selection a run makes of these list items: each made its Node (``address_type``), then selected."""
    return desired.select(node_raw(item, address_type) for item in items)


def published(sel: Selection) -> list[tuple[str, list[str]]]:
    """(node name, its published IPs) in the Selection's order."""
    return [(n.name, [str(ip) for ip in n.ips]) for n in sel.published]


def endpoint_pairs(cfg: Config, sel: Selection) -> list[tuple[str, str]]:
    """(ip, nodeName) of the Endpoints body, in body order."""
    body = endpoints(cfg, sel).body
    if "subsets" not in body:
        return []
    return [(a["ip"], a["nodeName"]) for a in body["subsets"][0]["addresses"]]


def empty_containers(value: Any, path: str = "") -> list[str]:
    """Paths of every empty dict or list inside ``value``."""
    found: list[str] = []
    if isinstance(value, dict):
        if not value:
            found.append(path or "<root>")
        for k, v in value.items():
            found += empty_containers(v, f"{path}.{k}")
    elif isinstance(value, list):
        if not value:
            found.append(path or "<root>")
        for i, v in enumerate(value):
            found += empty_containers(v, f"{path}[{i}]")
    return found


# --- upstream prometheus-operator cases, our expected results ------------------

UPSTREAM_CASES = [
    pytest.param(
        [node("node-0", "10.0.0.1")],
        "internal",
        [("10.0.0.1", "node-0")],
        [],
        id="simple",
    ),
    pytest.param(
        # Upstream #1815: a node with only a Hostname is one error, not a failure.
        [node("node-0", ("Hostname", "node-0")), node("node-1", "10.0.0.1")],
        "internal",
        [("10.0.0.1", "node-1")],
        [Skip("node-0", "no_usable_address")],
        id="missing ip on one node",
    ),
    pytest.param(
        # Upstream publishes all three; we never publish Unknown or False.
        [
            node("node-0", "10.0.0.1"),
            node("node-1", "10.0.0.2", ready="Unknown"),
            node("node-2", "10.0.0.3", ready="False"),
        ],
        "internal",
        [("10.0.0.1", "node-0")],
        [],
        id="not ready node unique ip",
    ),
    pytest.param(
        # Upstream publishes 10.0.0.1 (deduplicated) and 10.0.0.3; we publish only the Ready node.
        [
            node("node-0", "10.0.0.1"),
            node("node-1", "10.0.0.1", ready="Unknown"),
            node("node-2", "10.0.0.3", ready="False"),
        ],
        "internal",
        [("10.0.0.1", "node-0")],
        [],
        id="not ready node duplicate ip",
    ),
    pytest.param(
        # The Endpoints carry the primary address only; both go to the slices (below).
        [node("node-0", "10.0.0.1", "fc00:f853:ccd:e793::1")],
        "internal",
        [("10.0.0.1", "node-0")],
        [],
        id="dual-stack node emits both addresses",
    ),
    pytest.param(
        [
            node("node-0", ("InternalIP", "192.168.0.100"), ("ExternalIP", "203.0.113.100")),
            node("node-1", ("ExternalIP", "104.27.131.189"), ("InternalIP", "192.168.1.100")),
        ],
        "internal",
        [("192.168.0.100", "node-0"), ("192.168.1.100", "node-1")],
        [],
        id="node address priority internal",
    ),
    pytest.param(
        [
            node("node-0", ("InternalIP", "192.168.0.100"), ("ExternalIP", "203.0.113.100")),
            node("node-1", ("ExternalIP", "104.27.131.189"), ("InternalIP", "192.168.1.100")),
        ],
        "external",
        # Sorted by IP, not by node order as upstream.
        [("104.27.131.189", "node-1"), ("203.0.113.100", "node-0")],
        [],
        id="node address priority external",
    ),
]


@pytest.mark.parametrize(("nodes", "address_type", "expected", "skips"), UPSTREAM_CASES)
def test_upstream_cases(
    nodes: list[dict[str, Any]], address_type: str, expected: list[tuple[str, str]], skips: list[Skip]
) -> None:
    sel = select(nodes, address_type)
    assert endpoint_pairs(Config(), sel) == expected
    assert list(sel.skips) == skips
    assert sel.conflicts == ()


def test_dual_stack_node_emits_both_addresses_to_slices() -> None:
    sel = select([node("node-0", "10.0.0.1", "fc00:f853:ccd:e793::1")], "internal")
    assert published(sel) == [("node-0", ["10.0.0.1", "fc00:f853:ccd:e793::1"])]
    assert [str(ip) for ip in sel.ips(4)] == ["10.0.0.1"]
    assert [str(ip) for ip in sel.ips(6)] == ["fc00:f853:ccd:e793::1"]
    assert [str(ip) for ip in sel.ips()] == ["10.0.0.1", "fc00:f853:ccd:e793::1"]


# --- the seed case and "Each IP exactly once" ----------------------------------


@pytest.mark.parametrize("a_ready", ["False", "Unknown", None])
@pytest.mark.parametrize("a_first", [True, False])
def test_seed_case_only_the_ready_newer_node_is_published(a_ready: str | None, a_first: bool) -> None:
    a = node("node-a", "1.2.3.4", ready=a_ready, created=OLD)
    b = node("node-b", "1.2.3.4", ready="True", created=NEW)
    sel = select([a, b] if a_first else [b, a], "internal")
    assert published(sel) == [("node-b", ["1.2.3.4"])]
    assert (sel.nodes_total, sel.nodes_eligible) == (2, 1)
    # An ineligible node is not a conflict: it never claims anything.
    assert sel.conflicts == ()
    assert endpoint_pairs(Config(), sel) == [("1.2.3.4", "node-b")]


def test_ineligible_newer_node_never_takes_an_ip() -> None:
    older_ready = node("node-a", "1.2.3.4", created=OLD)
    newer_not_ready = node("node-b", "1.2.3.4", ready="False", created=NEWEST)
    newer_deleting = node("node-c", "1.2.3.4", created=NEWEST, deleting=True)
    sel = select([newer_not_ready, newer_deleting, older_ready], "internal")
    assert published(sel) == [("node-a", ["1.2.3.4"])]
    assert sel.conflicts == ()


def test_deleting_ready_node_is_never_published() -> None:
    sel = select([node("node-a", "10.0.0.1", deleting=True), node("node-b", "10.0.0.2")], "internal")
    assert published(sel) == [("node-b", ["10.0.0.2"])]
    assert (sel.nodes_total, sel.nodes_eligible) == (2, 1)


@pytest.mark.parametrize(
    ("nodes", "expected", "conflicts"),
    [
        pytest.param(
            [node("old", "1.2.3.4", created=OLD), node("new", "1.2.3.4", created=NEW)],
            [("new", ["1.2.3.4"])],
            (IPConflict("1.2.3.4", "new", ("old",)),),
            id="newest-wins",
        ),
        pytest.param(
            # The older node's name sorts first: age decides, not the name.
            [node("a-new", "1.2.3.4", created=NEW), node("0-old", "1.2.3.4", created=OLD)],
            [("a-new", ["1.2.3.4"])],
            (IPConflict("1.2.3.4", "a-new", ("0-old",)),),
            id="newest-wins-whatever-the-name",
        ),
        pytest.param(
            [node("node-b", "1.2.3.4", created=NEW), node("node-a", "1.2.3.4", created=NEW)],
            [("node-a", ["1.2.3.4"])],
            (IPConflict("1.2.3.4", "node-a", ("node-b",)),),
            id="tie-smallest-name",
        ),
        pytest.param(
            [
                node("node-c", "1.2.3.4", created=NEW),
                node("node-b", "1.2.3.4", created=NEW),
                node("node-a", "1.2.3.4", created=OLD),
            ],
            [("node-b", ["1.2.3.4"])],
            (IPConflict("1.2.3.4", "node-b", ("node-a", "node-c")),),
            id="three-way",
        ),
        pytest.param(
            [node("nocreation", "1.2.3.4", created=None), node("dated", "1.2.3.4", created=OLD)],
            [("dated", ["1.2.3.4"])],
            (IPConflict("1.2.3.4", "dated", ("nocreation",)),),
            id="missing-timestamp-counts-as-oldest",
        ),
        pytest.param(
            # The loser is excluded entirely: its IPv6 address goes too.
            [
                node("winner", "1.2.3.4", created=NEW),
                node("loser", "1.2.3.4", "fd00::5", created=OLD),
                node("other", "1.2.3.5"),
            ],
            [("winner", ["1.2.3.4"]), ("other", ["1.2.3.5"])],
            (IPConflict("1.2.3.4", "winner", ("loser",)),),
            id="loser-excluded-entirely",
        ),
        pytest.param(
            # IPs compare in canonical form.
            [node("n1", "fd00:0::1", created=OLD), node("n2", "fd00::1", created=NEW)],
            [("n2", ["fd00::1"])],
            (IPConflict("fd00::1", "n2", ("n1",)),),
            id="ipv6-canonical",
        ),
        pytest.param(
            [
                node("n1", ("InternalIP", "10.0.0.1"), created=OLD),
                node("n2", ("ExternalIP", "10.0.0.1"), created=NEW),
            ],
            [("n2", ["10.0.0.1"])],
            (IPConflict("10.0.0.1", "n2", ("n1",)),),
            id="conflict-across-address-types",
        ),
        pytest.param(
            # A loser holds nothing, so it never blocks an older third node.
            [
                node("x", "10.0.0.1", created=NEWEST),
                node("y", "10.0.0.1", "fd00::2", created=NEW),
                node("z", "fd00::2", created=OLD),
            ],
            [("x", ["10.0.0.1"]), ("z", ["fd00::2"])],
            (IPConflict("10.0.0.1", "x", ("y",)),),
            id="loser-holds-nothing",
        ),
    ],
)
def test_each_ip_exactly_once(
    nodes: list[dict[str, Any]], expected: list[tuple[str, list[str]]], conflicts: tuple[IPConflict, ...]
) -> None:
    for order in (nodes, nodes[::-1]):
        sel = select(order, "internal")
        assert published(sel) == expected
        assert sel.conflicts == conflicts


def test_unusable_addresses_are_reported_and_do_not_block_others() -> None:
    sel = select(
        [
            node("bad", "127.0.0.1", ("ExternalIP", "not-an-ip")),
            node("partly", "169.254.1.1", "10.0.0.2"),
            node("good", "10.0.0.1"),
        ],
        "internal",
    )
    assert published(sel) == [("good", ["10.0.0.1"]), ("partly", ["10.0.0.2"])]
    assert sorted(sel.skips, key=repr) == sorted(
        [
            Skip("bad", "loopback", "127.0.0.1"),
            Skip("bad", "not_an_ip", "not-an-ip"),
            Skip("bad", "no_usable_address"),
            Skip("partly", "link-local", "169.254.1.1"),
        ],
        key=repr,
    )
    assert (sel.nodes_total, sel.nodes_eligible) == (3, 3)


def test_ineligible_nodes_are_not_even_inspected() -> None:
    sel = select([node("down", "127.0.0.1", ready="False")], "internal")
    assert sel.skips == ()
    assert sel.published == ()


def test_published_sorted_by_primary_ip_numerically() -> None:
    nodes = [
        node("a", "fd00::1"),
        node("b", "10.0.0.10"),
        node("c", "10.0.0.9"),
        node("d", "9.0.0.1"),
    ]
    sel = select(nodes, "internal")
    assert [str(n.primary) for n in sel.published] == ["9.0.0.1", "10.0.0.9", "10.0.0.10", "fd00::1"]


# --- object bodies -------------------------------------------------------------


def test_service_body() -> None:
    assert service(Config()) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubelet", "namespace": "kube-system", "labels": COMMON},
        "spec": {"clusterIP": "None", "ports": PORTS},
    }


def test_service_body_with_http_metrics_and_custom_names() -> None:
    cfg = Config(namespace="monitoring", service_name="kl", field_manager="me", http_metrics=True)
    body = service(cfg)
    assert body["metadata"] == {
        "name": "kl",
        "namespace": "monitoring",
        "labels": {**COMMON, "app.kubernetes.io/managed-by": "me"},
    }
    assert body["spec"] == {"clusterIP": "None", "ports": [*PORTS, HTTP_PORT]}
    assert "selector" not in body["spec"]


def _sel(*nodes: dict[str, Any]) -> Selection:
    return select(list(nodes), "internal")


def test_endpoints_body() -> None:
    sel = _sel(node("n2", "10.0.0.10"), node("n1", "10.0.0.9", "fd00::1"), node("n3", "fd00::3"))
    plan = endpoints(Config(), sel)
    assert plan.truncated_from is None
    assert plan.body == {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "kubelet",
            "namespace": "kube-system",
            "labels": {**COMMON, "endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": [
            {
                "addresses": [
                    {
                        "ip": "10.0.0.9",
                        "nodeName": "n1",
                        "targetRef": {"kind": "Node", "apiVersion": "v1", "name": "n1", "uid": "uid-n1"},
                    },
                    {
                        "ip": "10.0.0.10",
                        "nodeName": "n2",
                        "targetRef": {"kind": "Node", "apiVersion": "v1", "name": "n2", "uid": "uid-n2"},
                    },
                    {
                        "ip": "fd00::3",
                        "nodeName": "n3",
                        "targetRef": {"kind": "Node", "apiVersion": "v1", "name": "n3", "uid": "uid-n3"},
                    },
                ],
                "ports": PORTS,
            }
        ],
    }


@pytest.mark.parametrize(
    ("resources", "skip_mirror"),
    [
        (("endpoints", "endpointslices"), True),
        (("endpoints",), False),
    ],
)
def test_skip_mirror_label_only_when_slices_are_managed(
    resources: tuple[str, ...], skip_mirror: bool
) -> None:
    labels = endpoints(Config(resources=resources), _sel(node("n1", "10.0.0.1"))).body["metadata"]["labels"]
    expected = dict(COMMON)
    if skip_mirror:
        expected["endpointslice.kubernetes.io/skip-mirror"] = "true"
    assert labels == expected


def test_endpoints_with_http_metrics_has_three_ports_in_order() -> None:
    body = endpoints(Config(http_metrics=True), _sel(node("n1", "10.0.0.1"))).body
    assert body["subsets"][0]["ports"] == [*PORTS, HTTP_PORT]


@pytest.mark.parametrize(
    "nodes",
    [
        pytest.param([], id="no-nodes"),
        pytest.param([node("n1", "10.0.0.1", ready="False")], id="only-not-ready"),
        pytest.param([node("n1", ("Hostname", "n1"))], id="only-addressless"),
    ],
)
def test_endpoints_without_eligible_nodes_has_no_subsets_key(nodes: list[dict[str, Any]]) -> None:
    plan = endpoints(Config(), select(nodes, "internal"))
    assert "subsets" not in plan.body
    assert "annotations" not in plan.body["metadata"]
    assert plan.truncated_from is None
    assert empty_containers(plan.body) == []


def _many(count: int) -> Selection:
    # Listed in reverse so the cut is checked to be by IP, not by input order.
    nodes = [node(f"n{i:04d}", str(ipaddress.IPv4Address(0x0A000000 + i))) for i in range(count)]
    return select(nodes[::-1], "internal")


def test_endpoints_hold_more_than_a_thousand_addresses() -> None:
    # The endpoints controller's 1,000 is not ours: Prometheus' default role reads these.
    plan = endpoints(Config(), _many(1100))
    assert plan.truncated_from is None
    assert "annotations" not in plan.body["metadata"]
    assert len(plan.body["subsets"][0]["addresses"]) == 1100


def _named(count: int, length: int) -> Selection:
    """``count`` nodes with names of ``length`` characters and real (36-character) uids; in reverse."""
    nodes = [
        node(f"{'n' * (length - 8)}-{i:07d}", str(ipaddress.IPv4Address(0x0A000000 + i)))
        for i in range(count)
    ]
    for i, item in enumerate(nodes):
        item["metadata"]["uid"] = str(uuid.UUID(int=i))
    return select(nodes[::-1], "internal")


def _long_named(count: int) -> Selection:
    return _named(count, 253)  # the longest node name (a DNS subdomain)


def _fitting(sel: Selection) -> int:
    """How many of ``sel``'s addresses the bound takes (one more would not fit)."""
    return len(endpoints(Config(), sel).body["subsets"][0]["addresses"])


@pytest.mark.parametrize("make", [_many, _long_named], ids=["short-names", "253-character-names"])
def test_endpoints_are_cut_only_past_the_size_bound(make: Any) -> None:
    fit = _fitting(make(20_000))
    assert fit < 20_000
    under = endpoints(Config(), make(fit))
    assert under.truncated_from is None and "annotations" not in under.body["metadata"]
    assert len(encode(under.body)) <= ENDPOINTS_MAX_BYTES

    over = endpoints(Config(), make(fit + 1))
    assert over.truncated_from == fit + 1
    assert over.body["metadata"]["annotations"] == {"endpoints.kubernetes.io/over-capacity": "truncated"}
    addresses = over.body["subsets"][0]["addresses"]
    assert len(addresses) == fit
    assert len(encode(over.body)) <= ENDPOINTS_MAX_BYTES
    # The cut is by IP (the input came in reverse), and tight: within one address of the bound.
    assert addresses[0]["ip"] == "10.0.0.0"
    assert len(encode(over.body)) + len(encode(addresses[-1])) + 250 > ENDPOINTS_MAX_BYTES


@pytest.mark.parametrize(("length", "nodes"), [(20, 5900), (40, 4800), (63, 4000), (253, 1600)])
def test_the_size_bound_takes_the_cluster_sizes_operations_md_gives(length: int, nodes: int) -> None:
    # docs/operations.md "Large clusters": the node counts the Endpoints hold whole.
    assert nodes <= _fitting(_named(20_000, length)) < nodes * 1.1


def _slice_endpoints(sel: Selection, version: int) -> list[dict[str, Any]]:
    return [slice_endpoint(n, ip) for n in sel.published for ip in n.ips if ip.version == version]


def test_slice_endpoint_shape() -> None:
    sel = _sel(node("n1", "10.0.0.1", "fd00:0::1"))
    assert _slice_endpoints(sel, 6) == [
        {
            "addresses": ["fd00::1"],
            "conditions": {"ready": True},
            "nodeName": "n1",
            "targetRef": {"kind": "Node", "apiVersion": "v1", "name": "n1", "uid": "uid-n1"},
        }
    ]


def test_endpoint_slice_body() -> None:
    eps = _slice_endpoints(_sel(node("n1", "10.0.0.1")), 4)
    body = endpoint_slice(Config(http_metrics=True), "kubelet-ipv4-0", "IPv4", eps, "svc-uid")
    assert body == {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubelet-ipv4-0",
            "namespace": "kube-system",
            "labels": {
                **COMMON,
                "kubernetes.io/service-name": "kubelet",
                "endpointslice.kubernetes.io/managed-by": "kubelet-endpoints-reconciler",
            },
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": "kubelet",
                    "uid": "svc-uid",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "addressType": "IPv4",
        "ports": [*PORTS, HTTP_PORT],
        "endpoints": eps,
    }


@pytest.mark.parametrize("service_uid", [None, ""])
def test_endpoint_slice_without_service_uid_has_no_owner_references_key(service_uid: str | None) -> None:
    eps = _slice_endpoints(_sel(node("n1", "fd00::1")), 6)
    body = endpoint_slice(Config(), "kubelet-ipv6-0", "IPv6", eps, service_uid)
    assert "ownerReferences" not in body["metadata"]
    assert body["addressType"] == "IPv6"
    assert empty_containers(body) == []


def test_endpoint_slice_uses_field_manager_and_service_name_in_labels() -> None:
    cfg = Config(service_name="kl", field_manager="mgr")
    eps = _slice_endpoints(_sel(node("n1", "10.0.0.1")), 4)
    labels = endpoint_slice(cfg, "kl-ipv4-0", "IPv4", eps, "u")["metadata"]["labels"]
    assert labels == {
        "k8s-app": "kubelet",
        "app.kubernetes.io/name": "kubelet",
        "app.kubernetes.io/managed-by": "mgr",
        "kubernetes.io/service-name": "kl",
        "endpointslice.kubernetes.io/managed-by": "mgr",
    }


CONFIGS = [
    Config(),
    Config(http_metrics=True),
    Config(resources=("endpoints",)),
    Config(resources=("endpointslices",)),
]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize(
    "nodes",
    [
        pytest.param([], id="empty"),
        pytest.param([node("n1", "10.0.0.1")], id="one"),
        pytest.param([node("n1", "10.0.0.1", "fd00::1"), node("n2", "fd00::2")], id="dual"),
    ],
)
def test_no_empty_map_or_list_in_any_body(cfg: Config, nodes: list[dict[str, Any]]) -> None:
    sel = select(nodes, "internal")
    bodies = [service(cfg), endpoints(cfg, sel).body]
    for version, family in ((4, "IPv4"), (6, "IPv6")):
        eps = _slice_endpoints(sel, version)
        if eps:
            bodies.append(endpoint_slice(cfg, f"kubelet-{family.lower()}-0", family, eps, "uid"))
    for body in bodies:
        assert empty_containers(body) == [], body


# --- encode --------------------------------------------------------------------


def test_encode_is_compact_sorted_json() -> None:
    assert encode({"b": 1, "a": {"d": [2, 1], "c": "x"}}) == b'{"a":{"c":"x","d":[2,1]},"b":1}'
    assert encode({"a": 1, "b": 2}) == encode({"b": 2, "a": 1})


def test_encode_round_trips() -> None:
    body = service(Config(http_metrics=True))
    assert json.loads(encode(body)) == body


def test_bodies_are_the_bytes_json_dumps_made_before() -> None:
    # encode went from json.dumps(sort_keys=True) to msgspec: an upgrade must
    # not change one byte of what a run sends for the same cluster.
    sel = select([node("a", "10.0.0.1", "fd00::1"), node("b", "10.0.0.2")], "internal")
    for body in (service(Config()), endpoints(Config(), sel).body, *_slice_bodies(Config(), sel)):
        assert encode(body) == json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _slice_bodies(cfg: Config, sel: Selection) -> list[dict[str, Any]]:
    out = []
    for version, family in ((4, "IPv4"), (6, "IPv6")):
        eps = _slice_endpoints(sel, version)
        if eps:
            out.append(endpoint_slice(cfg, "s", family, eps, "uid"))
    return out


def _bodies(cfg: Config, sel: Selection) -> list[bytes]:
    out = [encode(service(cfg)), encode(endpoints(cfg, sel).body)]
    return out + [encode(b) for b in _slice_bodies(cfg, sel)]


def test_encoded_bodies_identical_for_any_input_order() -> None:
    nodes = [
        node("c", "10.0.0.3", "fd00::3", created=NEW),
        node("a", "10.0.0.1"),
        node("b", "10.0.0.3", created=OLD),
        node("d", "fd00:0::4"),
    ]
    first = _bodies(Config(), select(nodes, "internal"))
    for order in (nodes[::-1], nodes[1:] + nodes[:1], sorted(nodes, key=lambda n: n["metadata"]["uid"])):
        assert _bodies(Config(), select(order, "internal")) == first


# --- properties ----------------------------------------------------------------

_V4 = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
_V6 = ["fd00::1", "fd00:0::2", "fd00::3", "fd00:0:0::1"]
_BAD = ["bogus", "127.0.0.1", "fe80::1", "0.0.0.0"]
_TIMES = [None, OLD, NEW, NEWEST]


@st.composite
def node_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(st.text("abcdef", min_size=1, max_size=3), min_size=2, max_size=8, unique=True))
    out = []
    for name in names:
        addresses = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["InternalIP", "InternalIP", "ExternalIP", "Hostname"]),
                    st.sampled_from(_V4 + _V6 + _BAD),
                ),
                min_size=1,
                max_size=3,
            )
        )
        out.append(
            node(
                name,
                *addresses,
                ready=draw(st.sampled_from(["True", "True", "True", "False", "Unknown", None])),
                created=draw(st.sampled_from(_TIMES)),
                deleting=draw(st.sampled_from([False, False, False, True])),
            )
        )
    return out


def _outranks(a: Node, b: Node) -> bool:
    """The documented priority: the newest creationTimestamp wins; on a tie the smallest name."""
    return a.created > b.created or (a.created == b.created and a.name < b.name)


@settings(max_examples=300, deadline=None)
@given(nodes=node_sets(), address_type=st.sampled_from(["internal", "external"]), data=st.data())
def test_select_properties(nodes: list[dict[str, Any]], address_type: str, data: st.DataObject) -> None:
    sel = select(nodes, address_type)
    made = [node_raw(n, address_type) for n in nodes]
    by_name = {n.name: n for n in made}
    pub_names = [p.name for p in sel.published]

    assert sel.nodes_total == len(nodes)
    assert sel.nodes_eligible == sum(n.eligible for n in made)

    # Each IP exactly once, only from eligible nodes, and only the node's own chosen addresses.
    all_ips = [ip for p in sel.published for ip in p.ips]
    assert len(all_ips) == len(set(all_ips))
    candidates = {n.name: n for n in made if n.eligible and n.ips}
    for p in sel.published:
        assert by_name[p.name].eligible
        assert p.ips == candidates[p.name].ips

    # Every eligible node with an address that is not published lost to a
    # higher-priority published node sharing one of its IPs, and is named a loser.
    losers = {name for c in sel.conflicts for name in c.losers}
    assert losers.isdisjoint(pub_names)
    published_by_name = {p.name: p for p in sel.published}
    for name, cand in candidates.items():
        if name in published_by_name:
            continue
        assert name in losers
        assert any(set(cand.ips) & set(p.ips) and _outranks(p, cand) for p in sel.published)
    assert losers == set(candidates) - set(published_by_name)
    for c in sel.conflicts:
        winner = published_by_name[c.winner]
        ip = ipaddress.ip_address(c.ip)
        assert ip in winner.ips
        for loser in c.losers:
            assert ip in candidates[loser].ips
            assert _outranks(winner, candidates[loser])

    # Sorted by primary IP; the Endpoints carry each published node once, at its primary.
    primaries = [p.primary for p in sel.published]
    assert primaries == sorted(primaries, key=ip_key)
    assert endpoint_pairs(Config(), sel) == [(str(p.primary), p.name) for p in sel.published]

    # Independent of input order, down to the encoded bytes.
    shuffled = data.draw(st.permutations(nodes))
    again = select(shuffled, address_type)
    assert again.published == sel.published
    assert again.conflicts == sel.conflicts
    assert (again.nodes_total, again.nodes_eligible) == (sel.nodes_total, sel.nodes_eligible)
    assert sorted(again.skips, key=repr) == sorted(sel.skips, key=repr)
    for cfg in (Config(), Config(http_metrics=True, resources=("endpoints",))):
        assert _bodies(cfg, again) == _bodies(cfg, sel)
        assert all(empty_containers(json.loads(b)) == [] for b in _bodies(cfg, sel))


def test_a_selection_keeps_nothing_of_a_node_but_what_it_publishes() -> None:
    # A run holds every published node at once: 15,000 of them. Each keeps
    # its name, uid, creation time and IPs (~830 bytes here, with the IP
    # index); its address list and the rest of its list item go with its page
    # of the list (kept, they were ~1,060 bytes a node).
    count = 2000
    parse_ip.cache_clear()  # its index grows by these IPs alone, as in a run
    items = [
        node(
            f"n{i}",
            f"10.2.{i // 250}.{i % 250 + 1}",
            f"fd00:2::{i + 1:x}",
            ("ExternalIP", f"203.0.{i // 250}.{i % 250 + 1}"),
        )
        for i in range(count)
    ]
    tracemalloc.start()
    try:
        sel = select(items, "internal")
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(sel.published) == count
    assert held / count < 950, f"{held / count:.0f} bytes a node"
