"""Node reading, pure: a Node list item in, the one :class:`Node` a run keeps of it out.

A run decodes only the fields declared in :class:`NodeItem`, and each item
becomes a :class:`Node` as its page is read (docs/behaviour.md "What it
publishes"); the rest of a node is never built. No I/O, no clock, no
logging: problems come back as data (:class:`Skip`).
"""

from __future__ import annotations

import functools
import ipaddress
import operator
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_OLDEST = datetime.min.replace(tzinfo=UTC)
_FALLBACK = {"InternalIP": "ExternalIP", "ExternalIP": "InternalIP"}
ADDRESS_TYPES = {"internal": "InternalIP", "external": "ExternalIP"}


class _TextOnce:
    """Formats an address once (see :func:`parse_ip`); the subclasses hold the ``_text`` slot."""

    __slots__ = ()
    _text: str

    def __str__(self) -> str:
        try:
            return self._text
        except AttributeError:
            text = super().__str__()
            setattr(self, "_text", text)  # noqa: B010 (the slot is the subclass's, which mypy cannot see here)
            return text


class _IPv4(_TextOnce, ipaddress.IPv4Address):
    __slots__ = ("_text",)


class _IPv6(_TextOnce, ipaddress.IPv6Address):
    __slots__ = ("_text",)


def _parse_ip(text: str) -> IPAddress:
    """``ipaddress.ip_address(text)``, not memoised (see :func:`parse_ip`)."""
    # inet_pton (C) first: five times faster than ipaddress's pure-Python
    # parser, and as strict (no leading zeros, no zone; tests/unit/test_nodes.py
    # holds it to ipaddress's answers). What it refuses goes to ipaddress,
    # which reads zones ("fd00::1%eth0") and gives the error.
    for family, cls in ((socket.AF_INET, _IPv4), (socket.AF_INET6, _IPv6)):
        try:
            packed = socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
        ip = cls(int.from_bytes(packed))
        if family == socket.AF_INET or text == _ntop6(packed):
            # Already canonical: the node's own text is the IP's (one string, not two).
            ip._text = text
        return ip
    try:
        return _IPv4(text)
    except ValueError:
        pass
    try:
        return _IPv6(text)
    except ValueError:
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 address") from None


#: ``ipaddress.ip_address(text)``, memoised (a failure is not: it raises again).
#: A run reads each IP up to three times (nodes, Endpoints, slices) and writes
#: it as text several times: each is made, and formatted, once
#: (docs/performance.md "Simpler").
parse_ip = functools.cache(_parse_ip)


def _ntop6(packed: bytes) -> str:
    """inet_ntop's text where it is Python's (RFC 5952); never equal to an input when not."""
    text = socket.inet_ntop(socket.AF_INET6, packed)
    return "" if "." in text else text  # Python never writes the dotted IPv4 tail


#: Sort key for mixed families: IPv4 before IPv6, then numerically. Read in
#: C from ipaddress's own slots: the ``version`` and ``__int__`` it stands for
#: cost two Python calls an IP, and a run sorts 30,000 IPs several times.
ip_key: Callable[[IPAddress], tuple[int, int]] = operator.attrgetter("_version", "_ip")


class MalformedNode(ValueError):
    """A list item that is not a Node the API server could have sent."""


@dataclass(frozen=True, slots=True)
class Skip:
    """An address or a node left out, with the reason (logged as a warning)."""

    node: str
    reason: str
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """One listed node, as the selection and the object bodies use it.

    Made from its list item as the page is read (:func:`node_of`); nothing
    else of the node outlives the page. ``ips``: the addresses it would
    publish, primary first, at most one per family (() when it is not
    eligible or has none usable); ``skips``: the addresses left out.
    """

    name: str
    eligible: bool  # Ready=True and not being deleted: nothing else is ever published
    uid: str = ""
    created: datetime = _OLDEST  # who keeps a shared IP: the newest node
    ips: tuple[IPAddress, ...] = ()
    skips: tuple[Skip, ...] = ()

    @property
    def primary(self) -> IPAddress:
        return self.ips[0]


class _Condition(msgspec.Struct, frozen=True, gc=False):
    type: str = ""
    status: str | None = None


class _Address(msgspec.Struct, frozen=True, gc=False):
    type: str = ""
    address: str = ""


class _Metadata(msgspec.Struct, frozen=True, gc=False):
    name: str
    uid: str = ""
    creationTimestamp: str | None = None  # the API's field names
    deletionTimestamp: str | None = None


class _Status(msgspec.Struct, frozen=True, gc=False):
    conditions: list[_Condition] | None = None
    addresses: list[_Address] | None = None


class NodeItem(msgspec.Struct, frozen=True, gc=False):
    """The fields of a Node list item a run reads; every other byte is skipped unbuilt.

    A real API server always sends ``metadata.name`` and ``status`` (Go's
    encoder never omits a struct), so both are required: an item without
    them, or with a field of another JSON type, is refused naming the item
    and the field, and a hostile page of ``{},{},...`` ends at its first item.
    ``gc=False`` here and below: they hold no reference cycles.
    """

    metadata: _Metadata
    status: _Status


def _timestamp(raw: str | None, field: str, name: str) -> datetime:
    if raw is None:
        return _OLDEST
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise MalformedNode(f"node {name!r}: {field} {raw!r} is not a timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def node_of(item: NodeItem, address_type: str) -> Node:
    """The :class:`Node` of a decoded Node list item, its addresses chosen (``address_type``).

    Types were checked by the decoder; what is left to refuse is what no API
    server sends: an empty name, a creationTimestamp that is no timestamp.
    """
    meta, status = item.metadata, item.status
    name = meta.name
    if not name:
        raise MalformedNode("node list item has an empty metadata.name")
    created = _timestamp(meta.creationTimestamp, "creationTimestamp", name)
    ready = next((c.status for c in status.conditions or () if c.type == "Ready"), None)
    name = sys.intern(name)  # the live objects' nodeNames share it
    if ready != "True" or meta.deletionTimestamp is not None:
        return Node(name, False)  # never published, never takes an IP from anyone
    addresses = [(a.type, a.address) for a in status.addresses or ()]
    ips, skips = choose_addresses(name, addresses, address_type)
    return Node(name, True, meta.uid, created, ips, tuple(skips))


def _unusable(ip: IPAddress) -> str | None:
    # The API server rejects these in Endpoints and EndpointSlices; one such
    # node must not fail the whole write, so it is skipped instead.
    # https://kubernetes.io/docs/concepts/services-networking/service/#endpoints
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified:
        return "unspecified"
    return "multicast" if ip.is_multicast else None


def choose_addresses(
    name: str, addresses: Iterable[tuple[str, str]], address_type: str
) -> tuple[tuple[IPAddress, ...], list[Skip]]:
    """Pick node ``name``'s addresses ((type, address) in its order): preferred type, else the other.

    At most one per family, the first of each. Returns () (and a Skip saying
    why) when nothing usable is left.
    """
    skips: list[Skip] = []
    preferred = ADDRESS_TYPES[address_type]
    for kind in (preferred, _FALLBACK[preferred]):
        usable: list[IPAddress] = []
        for typ, raw in addresses:
            if typ != kind:
                continue
            try:
                ip = parse_ip(raw)
            except ValueError:
                skips.append(Skip(name, "not_an_ip", raw))
                continue
            if isinstance(ip, ipaddress.IPv6Address):
                if ip.scope_id is not None:
                    # Go's net.ParseIP, and so the API server, rejects a zone
                    # ("fd00::1%eth0"): to Kubernetes it is not an IP.
                    skips.append(Skip(name, "not_an_ip", raw))
                    continue
                if ip.ipv4_mapped is not None:
                    # Go reads ::ffff:a.b.c.d as the IPv4 address a.b.c.d (its
                    # canonical form); an IPv6 slice rejects it, and Python's
                    # is_loopback misses ::ffff:127.0.0.1.
                    ip = parse_ip(str(ip.ipv4_mapped))
            why = _unusable(ip)
            if why:
                skips.append(Skip(name, why, raw))
                continue
            if all(ip.version != have.version for have in usable):
                usable.append(ip)
        if usable:
            return tuple(usable), skips
    skips.append(Skip(name, "no_usable_address"))
    return (), skips
