"""The whole write plan of a run, pure: desired state and live objects in, steps out.

Given the :class:`~lib.desired.Selection` and what the API server holds now
(:class:`~lib.live.Live`), decide every write (Service, Endpoints, slices,
take-over), their order, the warnings about other writers, and whether the
empty-set guard trips (docs/behaviour.md "Safety"). ``lib.run`` only carries the plan out.
Objects that already hold what we would apply are left alone, so a run over
an unchanged cluster costs reads only and changes no ``resourceVersion``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from lib import desired
from lib.config import Config
from lib.desired import FAMILIES, Selection
from lib.live import Live, LiveObject
from lib.nodes import IPAddress, Node, ip_key
from lib.placement import place


@dataclass(frozen=True)
class Apply:
    """One forced server-side apply; its body is built when read.

    A plan at 15,000 nodes holds ~300 slice applies: their bodies (15,000
    endpoint dicts each way) are built one at a time as they are written,
    not all at once when planned.
    """

    kind: str
    name: str
    make: Callable[[], dict[str, Any]] = field(repr=False, compare=False)

    @property
    def body(self) -> dict[str, Any]:
        """The body (built anew each time for a slice; read only)."""
        return self.make()


@dataclass(frozen=True)
class Remove:
    """``--take-over``: remove fields other managers own on one of our objects (a JSON patch).

    Not an apply: a forced apply transfers only the fields whose values
    differ, so a field that another manager owns with the value we would set
    stays co-owned, and survives when we drop it (seen on kube-apiserver
    v1.24). The patch tests the ``resourceVersion`` first.
    """

    kind: str
    name: str
    resource_version: str | None
    fields: tuple[str, ...]  # for the log, as ForeignField.describe() gives them
    ops: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Delete:
    """One delete of a slice, guarded by its ``resourceVersion``."""

    name: str
    resource_version: str | None
    foreign: bool = False  # another manager's slice, deleted by --take-over


Step = Apply | Remove | Delete


@dataclass(frozen=True)
class Warning:
    """A warning event the run logs (about other writers, or truncation)."""

    event: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """Every write of a run, in the order it is made.

    Service first (the slices name its uid), then Endpoints; slices that only
    lose IPs before slices that gain them, so no IP is held by two slices at
    once; our emptied slices after that, so a family switch never leaves no
    slice published; foreign slices (``--take-over``) last, once ours hold
    every IP. ``complete`` is False when the Service does not exist yet: the
    run applies it, then plans the rest with its uid.
    """

    steps: tuple[Step, ...]
    warnings: tuple[Warning, ...] = ()
    #: IPs Prometheus discovers through our Service now that the plan would leave
    #: it with none (0: the guard does not trip), whoever published them.
    empties: int = 0
    complete: bool = True
    refused: str | None = None  # why nothing may be written at all (exit 6): the Service is not ours


def build(cfg: Config, sel: Selection, live: Live) -> Plan:
    """The plan that brings ``live`` to the desired state of ``sel``."""
    warnings: list[Warning] = list(_warnings(live))
    empties = 0 if sel.published else len(_lost(cfg, live))
    if live.service is not None and (refused := _not_ours(cfg, live.service)):
        return Plan((), tuple(warnings), empties, refused=refused)
    steps = _object_steps(
        cfg, "Service", cfg.service_name, partial(desired.service, cfg), live.service, warnings
    )
    if live.service is None and cfg.manages_slices:
        return Plan(tuple(steps), tuple(warnings), empties, complete=False)
    if cfg.manages_endpoints:
        ep = desired.endpoints(cfg, sel)
        if ep.truncated_from:
            warnings.append(
                Warning(
                    "endpoints_truncated",
                    {
                        "addresses": ep.truncated_from,
                        "written": sum(len(sub["addresses"]) for sub in ep.body.get("subsets", ())),
                        "max_bytes": desired.ENDPOINTS_MAX_BYTES,
                        "annotation": desired.OVER_CAPACITY,
                        "hint": "the rest would make the Endpoints too large for etcd; Prometheus discovers"
                        " every kubelet with serviceDiscoveryRole: EndpointSlice (the slices hold them all)",
                    },
                )
            )
        steps.extend(
            _object_steps(cfg, "Endpoints", cfg.service_name, lambda: ep.body, live.endpoints, warnings)
        )
    if cfg.manages_slices:
        steps.extend(_slice_steps(cfg, sel, live, live.service.uid if live.service else None, warnings))
        if cfg.take_over:
            steps.extend(Delete(s.name, s.resource_version, foreign=True) for s in live.foreign_slices())
        warnings.extend(_unseen_by_slice_role(sel, live.service))
    return Plan(tuple(steps), tuple(warnings), empties)


def _not_ours(cfg: Config, service: LiveObject) -> str | None:
    """Why the Service of our name cannot be made ours, or None.

    Found before any write: an apply would be refused on every run (an
    immutable clusterIP), or turn another tool's Service into ours.
    """
    conflict = service.not_headless()
    if conflict is None:
        return None
    path, value = conflict
    why = "may not change" if path == "spec.clusterIP" else "is not ours to change"
    return (
        f"Service {cfg.namespace}/{service.name} belongs to someone else (field managers:"
        f" {', '.join(service.managers()) or 'none recorded'}): its {path} is {value!r} and {why},"
        " and ours is headless (clusterIP None); run with another --service-name, or delete that"
        " Service if nothing needs it (docs/operations.md, exit 6). Nothing was written"
    )


def _unseen_by_slice_role(sel: Selection, service: LiveObject | None) -> list[Warning]:
    """Published nodes Prometheus' endpointslice role cannot see.

    It reads only the slices of the Service's first IP family: the API
    server gives our headless, selector-less Service both families, the
    cluster's primary first, so a node with no address of that family is
    published (in the slices of the other) and found by the endpoints role,
    never by the endpointslice role.
    """
    families = (service.raw.get("spec") or {}).get("ipFamilies") if service is not None else None
    family = str(families[0]) if families else ""
    first = next((version for version, name in FAMILIES.items() if name == family), None)
    if first is None:
        return []
    unseen = [n.name for n in sel.published if all(ip.version != first for ip in n.ips)]
    if not unseen:
        return []
    return [
        Warning(
            "endpointslice_role_misses_nodes",
            {
                "nodes": unseen,
                "count": len(unseen),
                "family": family,
                "hint": f"Prometheus' endpointslice role reads only the {family} slices of our Service"
                f" (its first IP family); these nodes have no {family} address: the endpoints role"
                " finds them, or give them one",
            },
        )
    ]


def _lost(cfg: Config, live: Live) -> set[IPAddress]:
    """Every IP Prometheus finds through our Service now that a run publishing nothing would remove.

    Ours, and the foreign slices of our Service that --take-over would delete:
    the empty-set guard counts what Prometheus loses, whoever published it
    (docs/behaviour.md "Safety").
    """
    lost = live.published(cfg.manages_endpoints, cfg.manages_slices)
    if cfg.take_over and cfg.manages_slices:
        lost.update(ip for s in live.foreign_slices() for ip in s.ips())
    return lost


def new_slices(p: Plan, live: Live) -> list[str]:
    """Names of the slices ``p`` would create that ``live`` knows nothing of (not ours, not taken)."""
    known = {s.name for s in live.slices} | live.other_slice_names
    return [
        step.name
        for step in p.steps
        if isinstance(step, Apply) and step.kind == "EndpointSlice" and step.name not in known
    ]


def _object_steps(
    cfg: Config,
    kind: str,
    name: str,
    make: Callable[[], dict[str, Any]],
    current: LiveObject | None,
    warnings: list[Warning],
) -> list[Step]:
    """Apply the body ``make`` builds if it would change ``current``.

    The body is built here only to compare it with a live object, and
    dropped; an apply builds it again when it is written. Fields another
    manager owns and the body does not set survive any apply of ours:
    warned about, and with --take-over removed by a JSON patch first.
    """
    if current is None:
        return [Apply(kind, name, make)]
    body = make()
    foreign = current.foreign(body)
    if foreign:
        warnings.append(
            Warning(
                "foreign_fields",
                {
                    "kind": kind,
                    "name": current.name,
                    "fields": [f.describe() for f in foreign],
                    "managers": sorted({m for f in foreign for m in f.managers}),
                    "hint": "fields another manager owns survive our apply; --take-over removes them",
                },
            )
        )
    out: list[Step] = []
    if cfg.take_over and foreign:
        out.append(
            Remove(kind, current.name, current.resource_version, tuple(f.describe() for f in foreign),
                   current.removal(foreign))
        )  # fmt: skip
    if current.would_change(body):
        out.append(Apply(kind, name, make))
    return out


def _warnings(live: Live) -> Iterable[Warning]:
    foreign = live.foreign_slices()
    if foreign:
        yield Warning(
            "foreign_endpointslices",
            {
                "names": sorted(s.name for s in foreign),
                "managed_by": sorted({s.labels.get(desired.SLICE_MANAGED_BY, "") for s in foreign}),
                "hint": "slices of this Service written by another manager publish duplicate targets;"
                " --take-over deletes them",
            },
        )
    for s in live.name_taken:
        yield Warning(
            "endpointslice_name_taken",
            {
                "name": s.name,
                "service": s.labels.get(desired.SERVICE_NAME_LABEL, ""),
                "managed_by": s.labels.get(desired.SLICE_MANAGED_BY, ""),
                "hint": "another Service's slice holds this name: left alone, ours published under another",
            },
        )
    if live.kubelet_services:
        yield Warning(
            "foreign_kubelet_service",
            {
                "names": list(live.kubelet_services),
                "hint": "Prometheus scrapes every kubelet once more through each: delete it, or run with"
                " --service-name set to its name",
            },
        )


def _slice_steps(
    cfg: Config, sel: Selection, live: Live, service_uid: str | None, warnings: list[Warning]
) -> list[Step]:
    """Slice writes: shrinking slices, then growing ones, then our emptied slices.

    Existing slices carry their ``resourceVersion`` in the apply body, so a
    slice changed since we read it (an overlapping run) is refused with 409
    rather than overwritten from a stale view. The guard is per slice, not
    per set: the run checks afterwards that no IP is in two
    (:func:`ips_in_two_slices`).
    """
    ours = {s.name: s for s in live.ours()}
    holders = sel.holders
    shrink: list[Step] = []
    grow: list[Step] = []
    deletes: list[Step] = []
    placed_names: set[str] = set()
    for version, family in FAMILIES.items():
        prefix = f"{cfg.service_name}-ipv{version}-"
        mine = {name: s.addresses for name, s in ours.items() if s.address_type == family}
        # Names are the only identity the API server checks: a forced apply by
        # name would take over another Service's slice of that name.
        taken = [s.name for s in live.slices if s.name not in mine] + sorted(live.other_slice_names)
        placement = place(prefix, sel.ips(version), mine, cfg.max_endpoints_per_slice, taken)
        for placed in placement.slices:
            placed_names.add(placed.name)
            current = ours.get(placed.name)
            make = partial(_slice_body, cfg, placed.name, family, placed.ips, holders, service_uid)
            writes = _object_steps(cfg, "EndpointSlice", placed.name, make, current, warnings)
            if current is not None and writes and isinstance(writes[0], Apply):
                # The first write to a live slice is guarded by the version we
                # read (a Remove before it carries that guard itself).
                guarded = partial(make, resource_version=current.resource_version)
                writes[0] = Apply("EndpointSlice", placed.name, guarded)
            (grow if placed.gains else shrink).extend(writes)
        deletes.extend(Delete(name, ours[name].resource_version) for name in placement.deletes)
        placed_names.update(placement.deletes)
    # Ours but of no family we publish (an FQDN slice, say): nothing can go in it.
    deletes.extend(
        Delete(name, s.resource_version) for name, s in sorted(ours.items()) if name not in placed_names
    )
    return [*shrink, *grow, *deletes]


def _slice_body(
    cfg: Config,
    name: str,
    family: str,
    ips: tuple[IPAddress, ...],
    holders: Mapping[IPAddress, Node],
    service_uid: str | None,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """One slice's apply body; each node is in it at most once, so nothing is shared between bodies."""
    endpoints = [desired.slice_endpoint(holders[ip], ip) for ip in ips]
    body = desired.endpoint_slice(cfg, name, family, endpoints, service_uid)
    if resource_version:
        body["metadata"]["resourceVersion"] = resource_version
    return body


def ips_in_two_slices(live: Iterable[LiveObject]) -> list[str]:
    """Addresses held by more than one of our slices (an overlapping run's doing), sorted."""
    held = Counter(a for s in live if s.ours for a in s.addresses)
    return sorted(ip for ip, n in held.items() if n > 1)


@dataclass(frozen=True)
class Reassigned:
    """An IP published before and after this run, under another node."""

    ip: str
    before: str
    after: str


@dataclass(frozen=True)
class Changes:
    """What the run changes in the published set, compared with the live objects."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reassigned: list[Reassigned] = field(default_factory=list)


def changes(cfg: Config, sel: Selection, live: Live) -> Changes:
    """IPs added, removed, and moved to another node (the IP-reuse case made visible)."""
    now = sel.holders
    # Every IP published now, with the first node an object of ours names for it.
    before: dict[IPAddress, str] = {}
    for obj in live.managed(cfg.manages_endpoints, cfg.manages_slices):
        for ip, node in obj.holders():
            if not before.get(ip):
                before[ip] = node
    moved = sorted(
        (
            Reassigned(str(ip), node, holder.name)
            for ip, node in before.items()
            if node and (holder := now.get(ip)) is not None and holder.name != node
        ),
        key=lambda r: r.ip,
    )
    added = [str(ip) for ip in sorted((ip for ip in now if ip not in before), key=ip_key)]
    removed = [str(ip) for ip in sorted((ip for ip in before if ip not in now), key=ip_key)]
    return Changes(added, removed, moved)
