"""Node reading, pure: raw Node JSON in, the few facts the core needs out.

Real Node objects are 10-30 KB (images, managedFields, annotations); a run
keeps only a :class:`NodeInfo` per node, so memory is bounded by one list page
(SPEC "Which nodes, which addresses"). No I/O, no clock, no logging here:
problems come back as data (:class:`Skip`), like prometheus-operator's
``getNodeAddresses`` returning its errors.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_OLDEST = datetime.min.replace(tzinfo=UTC)
_FALLBACK = {"InternalIP": "ExternalIP", "ExternalIP": "InternalIP"}
ADDRESS_TYPES = {"internal": "InternalIP", "external": "ExternalIP"}


@functools.cache
def parse_ip(text: str) -> IPAddress:
    """``ipaddress.ip_address(text)``, memoised; raises ValueError for a non-IP.

    A run reads each IP up to three times (from its node, the live Endpoints
    and the live slices), and parsing in pure Python was a tenth of a
    15,000-node run. The objects are immutable, so sharing them is safe; a
    failure is not cached (it raises again).
    """
    return ipaddress.ip_address(text)


def ip_key(ip: IPAddress) -> tuple[int, int]:
    """Sort key for mixed families: IPv4 before IPv6, then numerically."""
    return ip.version, int(ip)


class MalformedNode(ValueError):
    """A list item that is not a Node the API server could have sent."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the core needs of one Node."""

    name: str
    uid: str
    created: datetime
    deleting: bool
    ready: str | None  # status of the Ready condition: "True", "False", "Unknown", or None
    addresses: tuple[tuple[str, str], ...]  # (type, address) in the node's own order

    @property
    def eligible(self) -> bool:
        """Ready=True and not being deleted (SPEC): nothing else is ever published."""
        return self.ready == "True" and not self.deleting


@dataclass(frozen=True, slots=True)
class Skip:
    """An address or a node left out, with the reason (logged as a warning)."""

    node: str
    reason: str
    address: str | None = None


@dataclass(frozen=True, slots=True)
class NodeAddresses:
    """A node's published addresses: at most one per family, primary first."""

    node: NodeInfo
    ips: tuple[IPAddress, ...]  # primary first; at most one IPv4 and one IPv6

    @property
    def primary(self) -> IPAddress:
        return self.ips[0]


def _timestamp(raw: Any, field: str, name: str) -> datetime:
    if raw is None:
        return _OLDEST
    try:
        parsed = datetime.fromisoformat(str(raw))
    except ValueError:
        raise MalformedNode(f"node {name!r}: {field} {raw!r} is not a timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def slim(item: Any) -> NodeInfo:
    """Keep the few fields of a raw Node dict the core needs.

    A real API server always sends ``metadata.name`` and ``status`` (Go's
    encoder never omits a struct), so an item without them means a broken or
    impostor server: :class:`MalformedNode`, and the run writes nothing.
    """
    if not isinstance(item, dict):
        raise MalformedNode(f"node list item is a {type(item).__name__}, not an object")
    meta = item.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise MalformedNode("node list item has no metadata.name")
    name: str = meta["name"]
    status = item.get("status")
    if not isinstance(status, dict):
        raise MalformedNode(f"node {name!r} has no status")
    ready = None
    for cond in status.get("conditions") or ():
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            ready = str(cond.get("status"))
            break
    addresses = tuple(
        (str(a.get("type")), str(a.get("address")))
        for a in status.get("addresses") or ()
        if isinstance(a, dict) and a.get("type") in _FALLBACK
    )
    return NodeInfo(
        name=name,
        uid=str(meta.get("uid") or ""),
        created=_timestamp(meta.get("creationTimestamp"), "creationTimestamp", name),
        deleting=meta.get("deletionTimestamp") is not None,
        ready=ready,
        addresses=addresses,
    )


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
    if ip.is_multicast:
        return "multicast"
    return None


def choose_addresses(node: NodeInfo, address_type: str) -> tuple[NodeAddresses | None, list[Skip]]:
    """Pick a node's addresses: preferred type, else the other; one per family.

    Returns ``None`` (and a Skip saying why) when nothing usable is left.
    """
    skips: list[Skip] = []
    preferred = ADDRESS_TYPES[address_type]
    for kind in (preferred, _FALLBACK[preferred]):
        usable: list[IPAddress] = []
        for typ, raw in node.addresses:
            if typ != kind:
                continue
            try:
                ip = parse_ip(raw)
            except ValueError:
                skips.append(Skip(node.name, "not_an_ip", raw))
                continue
            if isinstance(ip, ipaddress.IPv6Address):
                if ip.scope_id is not None:
                    # Go's net.ParseIP, and so the API server, rejects a zone
                    # ("fd00::1%eth0"): to Kubernetes it is not an IP.
                    skips.append(Skip(node.name, "not_an_ip", raw))
                    continue
                if ip.ipv4_mapped is not None:
                    # Go reads ::ffff:a.b.c.d as the IPv4 address a.b.c.d (its
                    # canonical form); an IPv6 slice rejects it, and Python's
                    # is_loopback misses ::ffff:127.0.0.1.
                    ip = ip.ipv4_mapped
            why = _unusable(ip)
            if why:
                skips.append(Skip(node.name, why, raw))
                continue
            if all(ip.version != have.version for have in usable):
                usable.append(ip)
        if usable:
            return NodeAddresses(node, tuple(usable)), skips
    skips.append(Skip(node.name, "no_usable_address"))
    return None, skips
