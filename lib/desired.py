"""Desired state, pure: nodes in, each IP exactly once, object bodies out.

docs/behaviour.md "What it publishes". Bodies are plain dicts
serialised by :func:`encode` to byte-identical JSON for the same input, so a
re-apply changes no ``resourceVersion``; they never carry an empty map or
list (on a real API server such an apply re-stamps managedFields and bumps
``resourceVersion``), and omit a field to clear it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from lib.config import Config
from lib.nodes import IPAddress, Node, Skip, ip_key

#: The largest Endpoints apply body we send, in bytes of JSON: Prometheus'
#: default discovery role reads Endpoints, so every address goes in while the
#: object fits what etcd stores (1.5 MiB; as protobuf an address takes no more
#: than its JSON), a third of it spare: docs/operations.md "Large clusters". The
#: endpoints controller's 1,000 addresses are its own convention, for kube-proxy.
ENDPOINTS_MAX_BYTES = 1 << 20
OVER_CAPACITY = "endpoints.kubernetes.io/over-capacity"
SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SLICE_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
FAMILIES = {4: "IPv4", 6: "IPv6"}


@dataclass(frozen=True, slots=True)
class IPConflict:
    """Several eligible nodes claimed one IP; the winner keeps it, losers are dropped."""

    ip: str
    winner: str
    losers: tuple[str, ...]


@dataclass(frozen=True)
class Selection:
    """Which nodes are published at which IPs, and what was left out and why."""

    nodes_total: int
    nodes_eligible: int
    published: tuple[Node, ...]  # sorted by primary IP
    conflicts: tuple[IPConflict, ...]
    skips: tuple[Skip, ...]
    #: The node publishing each IP (read only).
    holders: Mapping[IPAddress, Node] = field(repr=False, compare=False)

    def ips(self, version: int | None = None) -> list[IPAddress]:
        """Every published IP (of one family if given), sorted."""
        every = self._sorted_ips
        return list(every) if version is None else [ip for ip in every if ip.version == version]

    # Sorted once per run, not once per use (30,000 IPs at 15,000 nodes).
    @functools.cached_property
    def _sorted_ips(self) -> tuple[IPAddress, ...]:
        return tuple(sorted((ip for n in self.published for ip in n.ips), key=ip_key))


def _priority(nodes: Iterable[Node]) -> list[Node]:
    # Newest creationTimestamp first (the newer node holds a reused IP now),
    # then the smallest name: a total order, so input order never matters.
    by_name = sorted(nodes, key=lambda n: n.name)
    return sorted(by_name, key=lambda n: n.created, reverse=True)


def select(listed: Iterable[Node]) -> Selection:
    """Eligible nodes, their addresses, and every IP exactly once."""
    total = eligible = 0
    skips: list[Skip] = []
    candidates: list[Node] = []
    for node in listed:
        total += 1
        eligible += node.eligible
        skips.extend(node.skips)
        if node.ips:
            candidates.append(node)

    holder: dict[IPAddress, Node] = {}
    lost: dict[IPAddress, list[str]] = {}
    published: list[Node] = []
    # Greedy in priority order: a node is published only if none of its IPs is
    # held by a node already published; a loser is excluded entirely (all its
    # addresses) and holds nothing, so it never blocks an older third node.
    for cand in _priority(candidates):
        taken = next((ip for ip in cand.ips if ip in holder), None)
        if taken is not None:
            lost.setdefault(taken, []).append(cand.name)
            continue
        for ip in cand.ips:
            holder[ip] = cand
        published.append(cand)
    conflicts = tuple(
        IPConflict(str(ip), holder[ip].name, tuple(sorted(losers)))
        for ip, losers in sorted(lost.items(), key=lambda kv: ip_key(kv[0]))
    )
    published.sort(key=lambda n: ip_key(n.primary))
    return Selection(total, eligible, tuple(published), conflicts, tuple(skips), holder)


# --- object bodies -----------------------------------------------------------


def common_labels(cfg: Config) -> dict[str, str]:
    return {
        "k8s-app": "kubelet",
        "app.kubernetes.io/name": "kubelet",
        "app.kubernetes.io/managed-by": cfg.field_manager,
    }


def ports(cfg: Config) -> list[dict[str, Any]]:
    """The kubelet ports, in the documented order."""
    out: list[dict[str, Any]] = [
        {"name": "https-metrics", "port": 10250, "protocol": "TCP"},
        {"name": "cadvisor", "port": 4194, "protocol": "TCP"},
    ]
    if cfg.http_metrics:
        out.append({"name": "http-metrics", "port": 10255, "protocol": "TCP"})
    return out


def _meta(cfg: Config, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": cfg.namespace, "labels": dict(labels)}


def service(cfg: Config) -> dict[str, Any]:
    """The headless, selector-less kubelet Service."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(cfg, cfg.service_name, common_labels(cfg)),
        "spec": {"clusterIP": "None", "ports": ports(cfg)},
    }


def target_ref(node: Node) -> dict[str, str]:
    return {"kind": "Node", "apiVersion": "v1", "name": node.name, "uid": node.uid}


@dataclass(frozen=True)
class EndpointsPlan:
    body: dict[str, Any]
    truncated_from: int | None = None  # total addresses when not all fit ENDPOINTS_MAX_BYTES


def _address_bytes(n: Node) -> int:
    """The JSON size of ``n``'s Endpoints address and its comma, as :func:`encode` writes it.

    Names, uids and IPs need no escaping (the API server allows none of
    ``"``, ``\\`` or control characters in them), so the size is exact.
    """
    fixed = len('{"ip":"","nodeName":"","targetRef":{"apiVersion":"v1","kind":"Node","name":"","uid":""}},')
    return fixed + len(str(n.primary)) + 2 * len(n.name) + len(n.uid)


def endpoints(cfg: Config, sel: Selection) -> EndpointsPlan:
    """One subset, one address per node (its primary), sorted by IP; cut only past ENDPOINTS_MAX_BYTES."""
    labels = common_labels(cfg)
    if cfg.manages_slices:
        # The EndpointSlice mirroring controller would otherwise copy our
        # Endpoints into slices of its own: duplicate targets.
        labels[SKIP_MIRROR] = "true"
    meta = _meta(cfg, cfg.service_name, labels)
    published = sel.published
    truncated_from = None
    # Room for everything but the addresses, the truncation annotation included.
    size = (
        len(encode({"metadata": {**meta, "annotations": {OVER_CAPACITY: "truncated"}}, "p": ports(cfg)}))
        + 200
    )
    fit = 0
    for n in published:
        size += _address_bytes(n)
        if size > ENDPOINTS_MAX_BYTES:
            break
        fit += 1
    if fit < len(published):
        # Cut before building: address dicts for nodes left out are never made.
        truncated_from = len(published)
        published = published[:fit]
        meta["annotations"] = {OVER_CAPACITY: "truncated"}
    addresses = [{"ip": str(n.primary), "nodeName": n.name, "targetRef": target_ref(n)} for n in published]
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta}
    if addresses:  # no eligible node: no subsets at all, which removes ours
        body["subsets"] = [{"addresses": addresses, "ports": ports(cfg)}]
    return EndpointsPlan(body, truncated_from)


def slice_endpoint(n: Node, ip: IPAddress) -> dict[str, Any]:
    """One endpoint of a slice."""
    return {
        "addresses": [str(ip)],
        "conditions": {"ready": True},
        "nodeName": n.name,
        "targetRef": target_ref(n),
    }


def endpoint_slice(
    cfg: Config,
    name: str,
    family: str,
    endpoints: list[dict[str, Any]],
    service_uid: str | None,
) -> dict[str, Any]:
    """One EndpointSlice body; ``endpoints`` must not be empty (empty slices are deleted)."""
    labels = {
        **common_labels(cfg),
        SERVICE_NAME_LABEL: cfg.service_name,
        SLICE_MANAGED_BY: cfg.field_manager,
    }
    meta = _meta(cfg, name, labels)
    if service_uid:
        # Garbage collection: deleting the Service deletes its slices.
        meta["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "name": cfg.service_name,
                "uid": service_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": family,
        "ports": ports(cfg),
        "endpoints": endpoints,
    }


def encode(body: Mapping[str, Any]) -> bytes:
    """Byte-stable JSON (which is YAML) for an apply body: keys sorted, no spaces, UTF-8."""
    return msgspec.json.encode(body, order="sorted")
