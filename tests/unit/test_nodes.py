"""lib/nodes.py: raw Node dicts -> Node (``node_of``) and address choice.

docs/behaviour.md "What it publishes": which nodes, which addresses. Small
dicts, concrete expected values.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lib.kube import MalformedBody
from lib.nodes import MalformedNode, Node, Skip, choose_addresses, ip_key, parse_ip
from tests.unit.node_of import node_raw

T0 = "2024-01-01T00:00:00Z"


def raw_node(
    name: str = "n1",
    addresses: list[tuple[str, str]] | None = None,
    *,
    ready: str | None = "True",
    created: str | None = T0,
    deleting: bool = False,
    uid: str | None = None,
) -> dict[str, Any]:
    """A Node dict as the API server sends it (only the fields we read)."""
    meta: dict[str, Any] = {"name": name, "uid": uid if uid is not None else f"uid-{name}"}
    if created is not None:
        meta["creationTimestamp"] = created
    if deleting:
        meta["deletionTimestamp"] = "2024-06-01T00:00:00Z"
    conditions = [{"type": "MemoryPressure", "status": "False"}]
    if ready is not None:
        conditions.append({"type": "Ready", "status": ready})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": meta,
        "status": {
            "conditions": conditions,
            "addresses": [{"type": t, "address": a} for t, a in (addresses or [])],
        },
    }


def chosen(addresses: list[tuple[str, str]], address_type: str = "internal") -> list[str] | None:
    got, _ = choose_addresses("n1", addresses, address_type)
    return [str(ip) for ip in got] or None


# --- node_of -----------------------------------------------------------------


def test_a_node_keeps_what_the_core_needs_and_its_chosen_addresses() -> None:
    got = node_raw(
        raw_node(
            "node-a",
            [("Hostname", "node-a"), ("InternalIP", "10.0.0.1"), ("ExternalIP", "203.0.113.1")],
            uid="1234",
            created="2024-03-04T05:06:07Z",
        )
    )
    assert got == Node(
        name="node-a",
        eligible=True,
        uid="1234",
        created=datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC),
        ips=(ipaddress.ip_address("10.0.0.1"),),
    )
    assert got.primary is parse_ip("10.0.0.1")  # made once, shared with the live objects' reads


@pytest.mark.parametrize(
    ("ready", "deleting", "eligible"),
    [
        ("True", False, True),
        ("False", False, False),
        ("Unknown", False, False),
        (None, False, False),  # no Ready condition at all
        ("True", True, False),  # being deleted
        ("False", True, False),
    ],
)
def test_eligible_only_when_ready_true_and_not_deleting(
    ready: str | None, deleting: bool, eligible: bool
) -> None:
    got = node_raw(raw_node(addresses=[("InternalIP", "10.0.0.1")], ready=ready, deleting=deleting))
    assert got.eligible is eligible
    # A node that is not eligible keeps nothing but its name: it never takes an IP from anyone.
    assert got == (
        Node("n1", True, "uid-n1", got.created, (parse_ip("10.0.0.1"),)) if eligible else Node("n1", False)
    )


def test_ready_condition_without_status_is_not_eligible() -> None:
    item = raw_node()
    item["status"]["conditions"] = [{"type": "Ready"}]
    assert node_raw(item).eligible is False


@pytest.mark.parametrize("conditions", [None, []])
def test_no_conditions_means_not_ready(conditions: Any) -> None:
    item = raw_node()
    item["status"]["conditions"] = conditions
    assert node_raw(item).eligible is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-01T00:00:00Z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T02:00:00+02:00", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T00:00:00", datetime(2024, 1, 1, tzinfo=UTC)),  # naive read as UTC
    ],
)
def test_creation_timestamp_is_parsed_to_aware_utc(raw: str, expected: datetime) -> None:
    got = node_raw(raw_node(addresses=[("InternalIP", "10.0.0.1")], created=raw)).created
    assert got == expected
    assert got.tzinfo is not None


def test_missing_creation_timestamp_is_older_than_any_real_one() -> None:
    missing = node_raw(raw_node(addresses=[("InternalIP", "10.0.0.1")], created=None)).created
    assert (
        missing
        < node_raw(raw_node(addresses=[("InternalIP", "10.0.0.1")], created="1970-01-01T00:00:00Z")).created
    )


def test_hostname_and_dns_addresses_are_never_chosen_and_node_order_counts() -> None:
    got = node_raw(
        raw_node(
            addresses=[
                ("Hostname", "n1"),
                ("ExternalIP", "203.0.113.1"),
                ("InternalDNS", "n1.internal"),
                ("ExternalDNS", "n1.example.com"),
                ("InternalIP", "10.0.0.2"),
                ("InternalIP", "10.0.0.1"),
            ]
        )
    )
    assert got.ips == (parse_ip("10.0.0.2"),)
    assert node_raw(got_raw := raw_node(addresses=[("Hostname", "n1"), ("InternalDNS", "n1.x")])).ips == ()
    assert node_raw(got_raw).skips == (Skip("n1", "no_usable_address"),)


@pytest.mark.parametrize("addresses", [None, []])
def test_no_addresses_field_is_fine(addresses: Any) -> None:
    item = raw_node()
    item["status"]["addresses"] = addresses
    assert node_raw(item).ips == ()
    assert node_raw(item).skips == (Skip("n1", "no_usable_address"),)


def test_missing_uid_is_empty_string() -> None:
    item = raw_node()
    del item["metadata"]["uid"]
    item["status"]["addresses"] = [{"type": "InternalIP", "address": "10.0.0.1"}]
    assert node_raw(item).uid == ""


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    item = raw_node("bad-node")
    target = item
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return item


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    item = raw_node("bad-node")
    target = item
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return item


@pytest.mark.parametrize(
    ("item", "message"),
    [
        pytest.param(None, r"item 0: the item is a JSON null, not object", id="none"),
        pytest.param([], r"item 0: the item is a JSON array, not object", id="list"),
        pytest.param("node", r"item 0: the item is a JSON str, not object", id="string"),
        pytest.param(_without(("metadata",)), r"item 0: no metadata$", id="no-metadata"),
        pytest.param(_with(("metadata",), "x"), r"item 0: metadata is a JSON str", id="metadata-not-a-dict"),
        pytest.param(_without(("metadata", "name")), r"item 0: no metadata\.name", id="no-name"),
        pytest.param(
            _with(("metadata", "name"), 7), r"item 0: metadata\.name is a JSON int", id="name-not-a-string"
        ),
        pytest.param(_without(("status",)), r"item 0 \(node 'bad-node'\): no status", id="no-status"),
        pytest.param(
            _with(("status",), "Ready"),
            r"item 0 \(node 'bad-node'\): status is a JSON str",
            id="status-not-a-dict",
        ),
        pytest.param(
            _with(("metadata", "creationTimestamp"), 1700000000),
            r"\(node 'bad-node'\): metadata\.creationTimestamp is a JSON int",
            id="number-timestamp",
        ),
        pytest.param(
            _with(("status", "addresses"), [{"type": "InternalIP", "address": ["10.0.0.1"]}]),
            r"\(node 'bad-node'\): status\.addresses\[0\]\.address is a JSON array",
            id="address-not-a-string",
        ),
        pytest.param(
            _with(("status", "conditions"), {"Ready": "True"}),
            r"\(node 'bad-node'\): status\.conditions is a JSON object",
            id="conditions-not-a-list",
        ),
    ],
)
def test_malformed_items_are_refused_naming_the_item_and_the_field(item: Any, message: str) -> None:
    # Refused by the typed decoder itself (the same one a run uses), never built.
    with pytest.raises(MalformedBody, match=message) as caught:
        node_raw(item)
    assert caught.value.retry is False  # the same server would send it again: final, exit 4


@pytest.mark.parametrize(
    ("item", "message"),
    [
        pytest.param(_with(("metadata", "name"), ""), "empty metadata.name", id="empty-name"),
        pytest.param(
            _with(("metadata", "creationTimestamp"), "yesterday"),
            "'bad-node'.*creationTimestamp",
            id="bad-timestamp",
        ),
        pytest.param(_with(("metadata", "creationTimestamp"), ""), "creationTimestamp", id="empty-timestamp"),
    ],
)
def test_values_no_api_server_sends_are_refused(item: Any, message: str) -> None:
    with pytest.raises(MalformedNode, match=message):
        node_raw(item)


def test_unknown_fields_of_any_shape_are_skipped() -> None:
    item = raw_node("n1", [("InternalIP", "10.0.0.1")])
    item["metadata"]["managedFields"] = [{"fieldsV1": {"f:status": {"f:images": {}}}}]
    item["status"]["images"] = [{"names": ["x" * 100], "sizeBytes": 1}]
    item["status"]["addresses"][0]["extra"] = [1, {"a": None}]
    item["spec"] = {"taints": [{"key": "k", "effect": "NoSchedule"}]}
    assert node_raw(item) == node_raw(raw_node("n1", [("InternalIP", "10.0.0.1")]))


# --- choose_addresses ----------------------------------------------------------

BOTH = [("InternalIP", "10.0.0.1"), ("ExternalIP", "203.0.113.1")]


@pytest.mark.parametrize(
    ("addresses", "address_type", "expected"),
    [
        pytest.param(BOTH, "internal", ["10.0.0.1"], id="internal-preferred"),
        pytest.param(BOTH, "external", ["203.0.113.1"], id="external-preferred"),
        pytest.param([("ExternalIP", "203.0.113.1")], "internal", ["203.0.113.1"], id="internal-falls-back"),
        pytest.param([("InternalIP", "10.0.0.1")], "external", ["10.0.0.1"], id="external-falls-back"),
        pytest.param(
            [("InternalIP", "10.0.0.2"), ("InternalIP", "10.0.0.1"), ("InternalIP", "10.0.0.3")],
            "internal",
            ["10.0.0.2"],
            id="first-ipv4-in-node-order",
        ),
        pytest.param(
            [("InternalIP", "10.0.0.1"), ("InternalIP", "fd00::1"), ("InternalIP", "fd00::2")],
            "internal",
            ["10.0.0.1", "fd00::1"],
            id="first-ipv4-and-first-ipv6",
        ),
        pytest.param(
            [("InternalIP", "fd00::2"), ("InternalIP", "10.0.0.9"), ("InternalIP", "10.0.0.1")],
            "internal",
            ["fd00::2", "10.0.0.9"],
            id="ipv6-first-is-primary",
        ),
        pytest.param(
            [("ExternalIP", "fd00::9"), ("InternalIP", "fd00:0::1")],
            "internal",
            ["fd00::1"],
            id="ipv6-canonical-form",
        ),
        pytest.param(
            [("InternalIP", "10.0.0.1"), ("ExternalIP", "fd00::1")],
            "internal",
            ["10.0.0.1"],
            id="no-mixing-types-across-families",
        ),
        pytest.param(
            [("InternalIP", "127.0.0.1"), ("ExternalIP", "203.0.113.1")],
            "internal",
            ["203.0.113.1"],
            id="falls-back-when-preferred-all-unusable",
        ),
        pytest.param(
            [("InternalIP", "bogus"), ("InternalIP", "10.0.0.1")],
            "internal",
            ["10.0.0.1"],
            id="bad-first-then-good",
        ),
    ],
)
def test_choose_addresses(addresses: list[tuple[str, str]], address_type: str, expected: list[str]) -> None:
    assert chosen(addresses, address_type) == expected


def test_primary_is_first_usable_address_of_chosen_type() -> None:
    got, skips = choose_addresses(
        "n1",
        [("InternalIP", "169.254.0.1"), ("InternalIP", "fd00::1"), ("InternalIP", "10.0.0.1")],
        "internal",
    )
    assert got == (ipaddress.ip_address("fd00::1"), ipaddress.ip_address("10.0.0.1"))
    assert skips == [Skip("n1", "link-local", "169.254.0.1")]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("not-an-ip", "not_an_ip"),
        ("10.0.0.1 ", "not_an_ip"),
        ("10.0.0.256", "not_an_ip"),
        ("", "not_an_ip"),
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        # Kubernetes (Go's net.ParseIP) rejects an IPv6 zone: to the API it is not an IP.
        ("fd00::1%eth0", "not_an_ip"),
        # Go treats an IPv4-mapped address as the IPv4 address: this one is loopback.
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
def test_unusable_address_is_skipped_with_node_and_reason(address: str, reason: str) -> None:
    got, skips = choose_addresses("node-x", [("InternalIP", address), ("InternalIP", "10.0.0.7")], "internal")
    assert [str(ip) for ip in got] == ["10.0.0.7"]
    assert skips == [Skip("node-x", reason, address)]


def test_ipv4_mapped_ipv6_is_its_ipv4_address() -> None:
    # Go (and so the API server) reads ::ffff:a.b.c.d as a.b.c.d; an IPv6 slice rejects it.
    assert chosen([("InternalIP", "::ffff:10.0.0.1")]) == ["10.0.0.1"]
    assert chosen([("InternalIP", "10.0.0.1"), ("InternalIP", "::ffff:10.0.0.2")]) == ["10.0.0.1"]


@pytest.mark.parametrize(
    "addresses",
    [
        pytest.param([], id="none"),
        pytest.param([("Hostname", "n1"), ("InternalDNS", "n1.local")], id="hostname-and-dns-only"),
        pytest.param([("InternalIP", "127.0.0.1"), ("ExternalIP", "garbage")], id="all-unusable"),
    ],
)
def test_node_without_usable_address_is_skipped(addresses: list[tuple[str, str]]) -> None:
    got, skips = choose_addresses("node-y", addresses, "internal")
    assert got == ()
    assert skips[-1] == Skip("node-y", "no_usable_address")
    assert all(s.node == "node-y" for s in skips)


def test_all_unusable_reports_every_bad_address() -> None:
    got, skips = choose_addresses("z", [("InternalIP", "127.0.0.1"), ("ExternalIP", "garbage")], "internal")
    assert got == ()
    assert skips == [
        Skip("z", "loopback", "127.0.0.1"),
        Skip("z", "not_an_ip", "garbage"),
        Skip("z", "no_usable_address"),
    ]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("10.0.0.2", "10.0.0.10"),
        ("255.255.255.255", "::1"),
        ("fd00::2", "fd00::10"),
    ],
)
def test_ip_key_orders_ipv4_first_then_numerically(a: str, b: str) -> None:
    assert ip_key(ipaddress.ip_address(a)) < ip_key(ipaddress.ip_address(b))


@pytest.mark.parametrize("raw", ["10.0.0.1", "fd00:0::1", "fd00::1%eth0", "::ffff:10.0.0.1"])
def test_parse_ip_is_ip_address_memoised(raw: str) -> None:
    assert parse_ip(raw) == ipaddress.ip_address(raw)
    assert parse_ip(str(raw)) is parse_ip(raw)


@pytest.mark.parametrize("raw", ["bogus", "", "10.0.0.256", "010.0.0.1"])
def test_parse_ip_raises_every_time_for_a_non_ip(raw: str) -> None:
    for _ in range(2):
        with pytest.raises(ValueError):
            parse_ip(raw)


# --- properties --------------------------------------------------------------

_ADDRESS = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(
        [
            "bogus",
            "",
            "127.0.0.1",
            "fe80::1",
            "n1.example.com",
            "fd00:0::1",
            "fd00::1%eth0",
            "::ffff:10.0.0.1",
        ]
    ),
)
_TYPE = st.sampled_from(["InternalIP", "ExternalIP", "Hostname", "InternalDNS"])


def _canon(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Independent oracle: the address as Kubernetes reads it, None if not an IP to it."""
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if "%" in raw:
            return None
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip


def _usable(raw: str) -> bool:
    ip = _canon(raw)
    return ip is not None and not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


@settings(max_examples=150, deadline=None)
@given(
    addresses=st.lists(st.tuples(_TYPE, _ADDRESS), max_size=6),
    address_type=st.sampled_from(["internal", "external"]),
)
def test_chosen_addresses_match_an_independent_oracle(
    addresses: list[tuple[str, str]], address_type: str
) -> None:
    got, skips = choose_addresses("n1", addresses, address_type)
    assert all(s.node == "n1" for s in skips)

    preferred, other = (
        ("InternalIP", "ExternalIP") if address_type == "internal" else ("ExternalIP", "InternalIP")
    )
    expected: list[str] = []
    for kind in (preferred, other):
        for t, raw in addresses:
            ip = _canon(raw)
            taken = {ipaddress.ip_address(e).version for e in expected}
            if t == kind and _usable(raw) and ip is not None and ip.version not in taken:
                expected.append(str(ip))
        if expected:
            break
    if not expected:
        assert got == ()
        assert skips[-1] == Skip("n1", "no_usable_address")
        return
    assert [str(ip) for ip in got] == expected
    assert all(s.reason != "no_usable_address" for s in skips)


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        st.ip_addresses().map(str),
        st.ip_addresses(v=6).map(lambda ip: ip.exploded),
        st.text(alphabet="0123456789abcdefABCDEF:.%x ", max_size=45),
    )
)
@example("010.0.0.1")
@example("::ffff:1.2.3.04")
@example("::ffff:1.2.3.4")
@example("::1.2.3.4")
@example("fd00::1%eth0")
@example("1.2.3.4 ")
@example("0000:0000::0001")
@example("1::2::3")
@example("1:0:0:2:0:0:3:4")
@example("1:0:2:3:4:5:6:7")
@example("::ffff:0:0")
@example("::102:304")
@example("FD00::1")
def test_parse_ip_agrees_with_ipaddress_on_any_text(raw: str) -> None:
    # parse_ip takes a faster path (inet_pton) than ipaddress: the same
    # answers, errors included, and the same canonical text.
    try:
        expected = ipaddress.ip_address(raw)
    except ValueError:
        with pytest.raises(ValueError):
            parse_ip(raw)
        return
    got = parse_ip(raw)
    assert got == expected and isinstance(got, type(expected))
    assert str(got) == str(expected)
