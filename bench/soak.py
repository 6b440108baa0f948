"""Fault soak: many reconciler runs against the fake API server under seeded random faults.

Each run is the real code path (``lib.run.main``) in this process, over real
HTTP to :class:`tests.fakeapi.FakeApiServer`, with the JSON log captured.
Between runs the cluster changes (nodes join, go NotReady or Unknown, start
deleting, are deleted or recreated, change or reuse IPs); during a run a
seeded schedule injects faults at every kind of request the run makes (node
list pages, reads, applies, slice deletes): 5xx, 429 with and without
``Retry-After``, 410 on continue tokens, hangs longer than the request
timeout, dropped connections, 409s, non-JSON and truncated bodies, faults
that land between two writes of one run, and a second field manager writing
to our objects in the middle of a run.

After every write, and after every run, the invariants of issue 3 are
checked against the fake's stored objects, the request log and the run's
own ``reconcile_finished`` line. The expected state comes from a small
oracle written here from docs/behaviour.md, independently of ``lib/``.

    python -m bench.soak --runs 2000 --seed 1 2 3     # figures for the README
    python -m bench.soak --runs 300 --seed 7 --overlaps 10

The same core runs bounded in CI (tests/fake/test_soak.py). Exit status: 0 when
no invariant was violated, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes.client
import kubernetes.config

import lib.kube.transport
from lib.run import main as reconcile_main
from tests.fakeapi import FakeApiError, FakeApiServer, Request, kind_of, make_node

# Imported here, not in the first run: a cold import of the client costs
# seconds on a busy machine and would eat the first run's short deadline.
_CLIENT = (kubernetes.client, kubernetes.config)

NS, SERVICE, MANAGER = "kube-system", "kubelet", "kubelet-endpoints-reconciler"
#: The second field manager that writes to our objects in the middle of a run.
OTHER_MANAGER = "soak-other-writer"
TOUCH_LABEL = "soak.example.com/touched"
#: Documented exit codes (README "Exit codes"); 1 (a bug) is always a violation here.
DOCUMENTED = {0, 2, 3, 4, 5, 6, 7}
MAX_REQUESTS_PER_RUN = 150
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SVC_PATH = f"/api/v1/namespaces/{NS}/services/{SERVICE}"
_EP_PATH = f"/api/v1/namespaces/{NS}/endpoints/{SERVICE}"
_SLICES_PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
_SLICE_ITEM = _SLICES_PATH + r"/[^/]+"
_BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


# --- settings and figures ---------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """One soak: a seed, a number of runs and the knobs that bound its cost."""

    runs: int = 200
    seed: int = 1
    #: ``--timeout`` of every run: the hard deadline under test.
    timeout: float = 3.0
    #: The per-request cap (``lib.kube.transport.REQUEST_TIMEOUT_S``, 15 s in production),
    #: lowered here so a hang costs a fraction of the deadline and is retried.
    request_timeout: float = 0.6
    #: A run may last ``timeout + slack`` (process overhead, logging).
    slack: float = 1.0
    #: Share of runs with at least one injected fault.
    fault_rate: float = 0.6
    #: Share of faults that last the whole run (the API is down until the deadline).
    persistent_rate: float = 0.08
    #: Share of runs in which a second field manager writes mid-run.
    foreign_rate: float = 0.08
    max_nodes: int = 24
    #: None: drawn from the seed (small values exercise many slices and deletes).
    max_per_slice: int | None = None
    page_cap: int | None = None


@dataclass
class Figures:
    """What a soak did and found."""

    seeds: list[int] = field(default_factory=list)
    runs: int = 0
    faults: Counter[str] = field(default_factory=Counter)  # by fault kind, counted when they fired
    fault_targets: Counter[str] = field(default_factory=Counter)  # by request kind
    exit_codes: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    longest_s: float = 0.0
    longest_seed: int | None = None
    deadline_s: float = 0.0
    requests: int = 0
    writes_checked: int = 0
    cluster_changes: Counter[str] = field(default_factory=Counter)
    convergence_checks: int = 0
    overlap_trials: int = 0
    overlap_exit_codes: Counter[int] = field(default_factory=Counter)
    overlap_split_snapshots: int = 0
    overlap_longest_s: float = 0.0  # the longest of the overlapping runs (their own duration_s)
    overlap_deadline_s: float = 0.0
    violations: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def merge(self, other: Figures) -> None:
        self.seeds += other.seeds
        self.runs += other.runs
        self.faults.update(other.faults)
        self.fault_targets.update(other.fault_targets)
        self.exit_codes.update(other.exit_codes)
        self.outcomes.update(other.outcomes)
        if other.longest_s > self.longest_s:
            self.longest_s, self.longest_seed = other.longest_s, other.longest_seed
        self.deadline_s = max(self.deadline_s, other.deadline_s)
        self.requests += other.requests
        self.writes_checked += other.writes_checked
        self.cluster_changes.update(other.cluster_changes)
        self.convergence_checks += other.convergence_checks
        self.overlap_trials += other.overlap_trials
        self.overlap_exit_codes.update(other.overlap_exit_codes)
        self.overlap_split_snapshots += other.overlap_split_snapshots
        self.overlap_longest_s = max(self.overlap_longest_s, other.overlap_longest_s)
        self.overlap_deadline_s = max(self.overlap_deadline_s, other.overlap_deadline_s)
        self.violations += other.violations
        self.wall_s += other.wall_s

    def to_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in vars(self).items()}
        for key in ("faults", "fault_targets", "outcomes", "cluster_changes"):
            doc[key] = dict(doc[key])
        for key in ("exit_codes", "overlap_exit_codes"):
            doc[key] = {str(k): v for k, v in doc[key].items()}
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Figures:
        f = cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})
        for key in ("faults", "fault_targets", "outcomes", "cluster_changes"):
            setattr(f, key, Counter(doc.get(key) or {}))
        for key in ("exit_codes", "overlap_exit_codes"):
            setattr(f, key, Counter({int(k): v for k, v in (doc.get(key) or {}).items()}))
        return f

    def report(self) -> str:
        """The figures as Markdown (what the README's reliability section shows)."""

        def counts(c: Mapping[Any, int]) -> str:
            return ", ".join(f"{k}: {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0]))))

        lines = [
            f"- seeds: {' '.join(map(str, self.seeds))}",
            f"- runs: {self.runs} ({self.requests} API requests, {self.writes_checked} writes checked"
            f" one by one; {self.wall_s:.0f} s of soaking, summed over seeds)",
            f"- faults injected (fired): {sum(self.faults.values())} — {counts(self.faults)}",
            f"- faults by request kind: {counts(self.fault_targets)}",
            f"- cluster changes between runs: {sum(self.cluster_changes.values())} — "
            f"{counts(self.cluster_changes)}",
            f"- exit codes: {counts(self.exit_codes)}",
            f"- outcomes: {counts(self.outcomes)}",
            f"- longest run: {self.longest_s:.2f} s against a deadline of {self.deadline_s:g} s"
            f" (seed {self.longest_seed})",
            f"- convergence checks after the faults stopped: {self.convergence_checks}",
        ]
        if self.overlap_trials:
            lines.append(
                f"- overlapping runs: {self.overlap_trials} pairs started together"
                f" ({self.overlap_split_snapshots} with the cluster changing between their node lists);"
                f" exit codes {counts(self.overlap_exit_codes)}; longest {self.overlap_longest_s:.2f} s"
                f" against a deadline of {self.overlap_deadline_s:g} s"
            )
        lines.append(f"- invariant violations: {len(self.violations)}")
        lines += [f"  - {v}" for v in self.violations[:50]]
        return "\n".join(lines)


# --- the cluster ------------------------------------------------------------------------


@dataclass
class SimNode:
    """One node of the simulated cluster."""

    name: str
    uid: str
    created: int  # seconds after _BASE_TIME; ties happen on purpose
    ready: str | None = "True"  # the Ready condition's status; None: no Ready condition
    deleting: bool = False
    ip4: str | None = None
    ip6: str | None = None
    external: str | None = None  # an ExternalIP, the fallback
    bad_first: str | None = None  # an unusable InternalIP listed first (skipped)

    def addresses(self) -> list[tuple[str, str]]:
        pairs = []
        if self.bad_first:
            pairs.append(("InternalIP", self.bad_first))
        if self.ip4:
            pairs.append(("InternalIP", self.ip4))
        if self.ip6:
            pairs.append(("InternalIP", self.ip6))
        pairs.append(("Hostname", self.name))
        if self.external:
            pairs.append(("ExternalIP", self.external))
        return pairs

    def to_dict(self) -> dict[str, Any]:
        created = (_BASE_TIME + timedelta(seconds=self.created)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return make_node(
            self.name,
            self.addresses(),
            ready=self.ready,
            created=created,
            deleting=self.deleting,
            uid=self.uid,
        )


class Cluster:
    """A seeded random cluster that changes between runs."""

    def __init__(self, rng: random.Random, max_nodes: int) -> None:
        self.rng = rng
        self.max_nodes = max_nodes
        self.nodes: dict[str, SimNode] = {}
        self.clock = 0
        self.serial = 0
        # A small pool, so IPs are reused often (the bug this tool exists for).
        self.pool4 = [f"10.0.0.{i}" for i in range(1, max_nodes * 2)]
        self.pool6 = [f"fd00::{i:x}" for i in range(1, max_nodes * 2)]
        for _ in range(rng.randint(3, max(3, max_nodes // 2))):
            self._join()

    def snapshot(self) -> list[SimNode]:
        return [replace(n) for n in sorted(self.nodes.values(), key=lambda n: n.name)]

    def dicts(self) -> list[dict[str, Any]]:
        return [n.to_dict() for n in self.snapshot()]

    def _tick(self) -> int:
        if self.rng.random() < 0.8:  # else: the same second, a creationTimestamp tie
            self.clock += self.rng.randint(1, 600)
        return self.clock

    def _uid(self, name: str) -> str:
        self.serial += 1
        return f"{name}-uid-{self.serial}"

    def _join(self, name: str | None = None) -> str:
        rng = self.rng
        if name is None:
            self.serial += 1
            name = f"node-{self.serial:04d}"
        used = sorted({n.ip4 for n in self.nodes.values() if n.ip4})
        # Often an IP another node holds now (NotReady or Ready): IP reuse. The
        # pool is small, so a fresh pick often reuses a deleted node's IP too.
        ip4 = rng.choice(used) if used and rng.random() < 0.35 else rng.choice(self.pool4)
        node = SimNode(name, self._uid(name), self._tick(), ip4=ip4)
        if rng.random() < 0.3:
            node.ip6 = rng.choice(self.pool6)
        shape = rng.random()
        if shape < 0.05:
            node.bad_first = rng.choice(["127.0.0.1", "169.254.3.4", "0.0.0.0", "not-an-ip"])
        elif shape < 0.08:
            node.ip4, node.ip6 = None, None  # only an ExternalIP: the fallback
            node.external = f"192.0.2.{rng.randint(1, 60)}"
        elif shape < 0.1:
            node.ip4, node.ip6, node.bad_first = None, None, "127.0.0.1"  # nothing usable: skipped
        if rng.random() < 0.15:
            node.ready = rng.choice(["False", "Unknown", None])
        self.nodes[name] = node
        return name

    def change(self, counts: Counter[str]) -> None:
        """One random change to the cluster."""
        rng = self.rng
        names = sorted(self.nodes)
        choices = ["join", "ready", "not_ready", "deleting", "delete", "recreate", "new_ip", "ipv6"]
        choices += ["pool_down", "pool_up"]
        weights = [4, 3, 3, 1, 2, 1, 2, 1, 1, 1]
        if len(names) >= self.max_nodes:
            weights[0] = weights[-1] = 0
        if not names:
            choices, weights = ["join"], [1]
        what = rng.choices(choices, weights)[0]
        if what == "join":
            self._join()
        elif what == "pool_up":  # a node pool scales up
            for _ in range(min(rng.randint(2, 5), self.max_nodes - len(names))):
                self._join()
        elif what == "pool_down":  # a node pool scales down: slices empty, get deleted
            for name in rng.sample(names, max(1, len(names) * rng.randint(3, 6) // 10)):
                del self.nodes[name]
        else:
            node = self.nodes[rng.choice(names)]
            if what == "ready":
                node.ready = "True"
            elif what == "not_ready":
                node.ready = rng.choice(["False", "Unknown", None])
            elif what == "deleting":
                node.deleting = True
            elif what == "delete":
                del self.nodes[node.name]
            elif what == "recreate":  # the same name, a new uid and creationTimestamp
                del self.nodes[node.name]
                self._join(node.name)
            elif what == "new_ip":
                node.ip4 = rng.choice(self.pool4)
            else:
                node.ip6 = None if node.ip6 else rng.choice(self.pool6)
        counts[what] += 1

    def outage(self, counts: Counter[str]) -> None:
        """Every node NotReady at once: the empty-set guard's case."""
        for node in self.nodes.values():
            node.ready = "Unknown"
        counts["all_not_ready"] += 1

    def recover(self, counts: Counter[str]) -> None:
        for node in self.nodes.values():
            node.ready = "True"
        counts["all_ready"] += 1


# --- the oracle: docs/behaviour.md's rules, written independently of lib/ ------------------------------

Endpoint = tuple[str, str, str]  # (ip, nodeName, node uid)


@dataclass(frozen=True)
class Want:
    """What a run that read this node list must publish."""

    endpoints: frozenset[Endpoint]  # Endpoints: the primary address of each published node
    slices: Mapping[str, tuple[str, str]]  # EndpointSlices: every published IP -> (node, uid)

    @property
    def empty(self) -> bool:
        return not self.slices


def _usable(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return None
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        return None
    return ip


def oracle(nodes: Sequence[SimNode]) -> Want:
    """docs/behaviour.md "What it publishes": which nodes, each IP once (the soak's node shapes)."""
    candidates = []
    for n in nodes:
        if n.ready != "True" or n.deleting:
            continue
        for kind in ("InternalIP", "ExternalIP"):
            ips: list[Any] = []
            for typ, raw in n.addresses():
                ip = _usable(raw) if typ == kind else None
                if ip is not None and all(ip.version != have.version for have in ips):
                    ips.append(ip)
            if ips:
                candidates.append((n, ips))
                break
    candidates.sort(key=lambda c: c[0].name)
    candidates.sort(key=lambda c: c[0].created, reverse=True)  # newest first, then smallest name
    held: dict[str, tuple[str, str]] = {}
    endpoints = set()
    for n, ips in candidates:
        if any(str(ip) in held for ip in ips):
            continue  # lost a conflict: excluded entirely
        for ip in ips:
            held[str(ip)] = (n.name, n.uid)
        endpoints.add((str(ips[0]), n.name, n.uid))
    return Want(frozenset(endpoints), held)


# --- the published state -------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """Our objects as stored: Endpoints addresses and our slices' endpoints."""

    service: bool
    endpoints: tuple[Endpoint, ...] | None  # None: no Endpoints object
    slices: Mapping[str, tuple[str, tuple[Endpoint, ...]]]  # name -> (addressType, endpoints)
    versions: Mapping[str, str]  # "Kind/name" -> resourceVersion

    def slice_endpoints(self) -> list[Endpoint]:
        return [e for _, eps in self.slices.values() for e in eps]

    def ips(self) -> set[str]:
        return {e[0] for e in self.endpoints or ()} | {e[0] for e in self.slice_endpoints()}


def _endpoint(ip: Any, holder: Mapping[str, Any]) -> Endpoint:
    ref = holder.get("targetRef") or {}
    return (str(ip), str(holder.get("nodeName")), str(ref.get("uid")))


def _ep_list(obj: Mapping[str, Any] | None) -> tuple[Endpoint, ...]:
    return tuple(
        _endpoint(a.get("ip"), a) for s in (obj or {}).get("subsets") or () for a in s.get("addresses") or ()
    )


def _slice_list(obj: Mapping[str, Any]) -> tuple[Endpoint, ...]:
    return tuple(_endpoint(ip, e) for e in obj.get("endpoints") or () for ip in e.get("addresses") or ())


def _ours(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return bool(labels.get("endpointslice.kubernetes.io/managed-by") == MANAGER)


def read_published(fake: FakeApiServer) -> Published:
    service = fake.get_object("Service", NS, SERVICE)
    ep = fake.get_object("Endpoints", NS, SERVICE)
    versions = {}
    for kind, obj in (("Service", service), ("Endpoints", ep)):
        if obj is not None:
            versions[kind] = obj["metadata"]["resourceVersion"]
    slices = {}
    for s in fake.objects("EndpointSlice", NS):
        name = s["metadata"]["name"]
        versions[f"EndpointSlice/{name}"] = s["metadata"]["resourceVersion"]
        if _ours(s):
            slices[name] = (str(s.get("addressType")), _slice_list(s))
    return Published(service is not None, None if ep is None else _ep_list(ep), slices, versions)


def duplicates(pub: Published) -> list[str]:
    """Each IP at most once in the Endpoints, and at most once across all our slices."""
    problems = []
    for what, eps in (("Endpoints", pub.endpoints or ()), ("EndpointSlices", pub.slice_endpoints())):
        seen = Counter(e[0] for e in eps)
        twice = sorted(ip for ip, n in seen.items() if n > 1)
        if twice:
            problems.append(f"{what} publish {twice} more than once")
    return problems


def _matches_want(eps: Sequence[Endpoint], want: Want) -> list[Endpoint]:
    """The endpoints that the node list does not justify (wrong node, ineligible, lost a conflict)."""
    return [e for e in eps if want.slices.get(e[0]) != (e[1], e[2])]


# --- faults --------------------------------------------------------------------------------

#: request kind -> (method, path regex, query match)
TARGETS: dict[str, tuple[str, str, dict[str, str | bool]]] = {
    "node list, first page": ("GET", "/api/v1/nodes", {"continue": False}),
    "node list, continue page": ("GET", "/api/v1/nodes", {"continue": True}),
    "service read": ("GET", _SVC_PATH, {}),
    "endpoints read": ("GET", _EP_PATH, {}),
    "slice list": ("GET", _SLICES_PATH, {}),
    "service apply": ("PATCH", _SVC_PATH, {}),
    "endpoints apply": ("PATCH", _EP_PATH, {}),
    "slice apply": ("PATCH", _SLICE_ITEM, {}),
    "slice delete": ("DELETE", _SLICE_ITEM, {}),
    # Between two writes of one run: the first (or second) write lands, the next fails.
    "any write after the first": ("PATCH", f"{_SVC_PATH}|{_EP_PATH}|{_SLICE_ITEM}", {}),
}
_WRITE_TARGETS = {
    "service apply",
    "endpoints apply",
    "slice apply",
    "slice delete",
    "any write after the first",
}
#: fault kinds and their weights; the cost of each is bounded by the settings.
FAULTS = {
    "500": 3,
    "502": 2,
    "503": 3,
    "504": 2,
    "429": 2,
    "429 Retry-After: 0": 2,
    "429 Retry-After: 1": 1,
    "410 on a continue token": 3,
    "hang past the request timeout": 2,
    "hang past the deadline": 0.3,
    "dropped connection": 3,
    "409 Conflict": 3,
    "non-JSON body": 2,
    "HTML error page (502)": 1,
    "truncated body": 2,
    # A hostile or broken server (issue 10): none of these is an answer, and
    # a run that took one for success read an empty cluster or counted a
    # write that stored nothing.
    "redirect (302)": 1,
    "204 No Content": 1,
    "empty object {}": 1,
    "1 MB Status message (503)": 1,
}
_TRANSIENT = set(FAULTS) - {"409 Conflict"}
_NOT_AIMED = ("410 on a continue token", "hang past the deadline")


@dataclass
class Fault:
    kind: str
    target: str
    times: int
    after: int


def draw_faults(rng: random.Random, settings: Settings) -> list[Fault]:
    if rng.random() >= settings.fault_rate:
        return []
    out = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        kind = rng.choices(list(FAULTS), list(FAULTS.values()))[0]
        if kind == "410 on a continue token":
            target = "node list, continue page"
        elif kind == "409 Conflict":
            target = rng.choice(sorted(_WRITE_TARGETS))
        else:
            # Slice deletes are rarer than other requests: aim at them more often.
            target = rng.choice([*sorted(TARGETS), "slice delete", "slice delete"])
        if kind == "hang past the deadline":
            times = 1
        elif rng.random() < settings.persistent_rate:
            times = -1
        else:
            times = rng.choice([1, 1, 1, 2, 3])
        after = (
            rng.choice([1, 1, 2]) if target == "any write after the first" else rng.choice([0, 0, 0, 1, 2])
        )
        out.append(Fault(kind, target, times, after))
    return out


def inject(fake: FakeApiServer, f: Fault, settings: Settings) -> None:
    method, path, query = TARGETS[f.target]
    kw: dict[str, Any] = {"times": f.times, "after": f.after, "query": query}
    kind = f.kind
    if kind in ("500", "502", "503", "504", "429", "409 Conflict"):
        kw["status"] = int(kind[:3])
    elif kind.startswith("429 Retry-After"):
        kw.update(status=429, retry_after=kind.rsplit(" ", 1)[1])
    elif kind == "410 on a continue token":
        kw["status"] = 410
    elif kind == "hang past the request timeout":
        kw["hang"] = settings.request_timeout + 0.15
    elif kind == "hang past the deadline":
        kw["hang"] = settings.timeout + 0.3
    elif kind == "dropped connection":
        kw["drop"] = True
    elif kind == "non-JSON body":
        kw["body"] = b"this is not JSON {"
    elif kind == "HTML error page (502)":
        kw.update(status=502, body=b"<html><body><h1>502 Bad Gateway</h1></body></html>")
    elif kind == "truncated body":
        kw["truncate"] = True
    elif kind == "redirect (302)":
        kw["status"] = 302
    elif kind == "204 No Content":
        kw["status"] = 204
    elif kind == "empty object {}":
        kw["body"] = b"{}"
    elif kind == "1 MB Status message (503)":
        status = {"kind": "Status", "code": 503, "reason": "ServiceUnavailable", "message": "m" * (1 << 20)}
        kw.update(status=503, body=json.dumps(status).encode())
    fake.inject(method, path, **kw)


def _fired(fake: FakeApiServer) -> list[int]:
    # How often each injected fault fired (the fake keeps no public count).
    with fake._lock:
        return [f.fired for f in fake._faults]


# --- one run -------------------------------------------------------------------------------


@dataclass
class RunResult:
    code: int
    seconds: float
    finished: list[dict[str, Any]]  # the run's reconcile_finished events
    lines: list[str]


def run_once(args: Sequence[str]) -> RunResult:
    """``lib.run.main`` in this process, its JSON log captured."""
    out = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out):
        code = reconcile_main(list(args), {})
    seconds = time.monotonic() - started
    lines = out.getvalue().splitlines()
    finished = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "reconcile_finished":
            finished.append(event)
    return RunResult(code, seconds, finished, lines)


class Watch:
    """The fake's ``on_request`` hook: checks the stored state after every write.

    Also plays the second field manager: when armed, it writes to one of our
    objects right after the run has read the live slices (so the run's next
    write to that slice is refused with 409 and it plans again), or deletes a
    slice of ours as someone else would.
    """

    def __init__(self, fake: FakeApiServer) -> None:
        self.fake = fake
        self.lock = threading.Lock()
        self.violations: list[str] = []
        self.writes = 0
        self.want: Want | None = None
        self.alt_want: Want | None = None  # overlap: the other node list a run may have read
        self.allow_transient_duplicates = False
        self.last: Published | None = None
        self.foreign: str | None = None  # "touch" or "delete", fired once
        self.foreign_done = False
        self.rng = random.Random(0)
        self.touches = 0
        self.barrier: Callable[[Request], None] | None = None

    def begin(self, want: Want, foreign: str | None, rng: random.Random) -> None:
        with self.lock:
            self.want, self.alt_want = want, None
            self.last = read_published(self.fake)
            self.foreign, self.foreign_done, self.rng = foreign, False, rng

    def __call__(self, request: Request) -> None:
        try:
            self._observe(request)
        except Exception as exc:  # never break the fake's answer; a soak bug is a violation too
            self.violations.append(f"soak watch failed: {exc!r}")

    def _observe(self, request: Request) -> None:
        if self.barrier is not None:
            self.barrier(request)
        if (
            request.method == "GET"
            and request.path == _SLICES_PATH
            and self.foreign
            and not self.foreign_done
        ):
            self.foreign_done = True
            self._foreign()
        if request.method not in ("PATCH", "DELETE") or request.status >= 300 or request.status == 0:
            return
        with self.lock:
            now = read_published(self.fake)
            self.writes += 1
            before, self.last = self.last, now
            if not self.allow_transient_duplicates:
                self.violations += [f"after {request.method} {request.path}: {p}" for p in duplicates(now)]
            wants = [w for w in (self.want, self.alt_want) if w is not None]
            if before is None or not wants:
                return
            # A write never empties a non-empty published set (no run here has --allow-empty).
            if before.endpoints and not now.endpoints:
                self.violations.append(f"{request.method} {request.path} emptied the Endpoints")
            if before.slice_endpoints() and not now.slice_endpoints():
                self.violations.append(f"{request.method} {request.path} emptied the EndpointSlices")
            # A write never unpublishes an IP its node list still wants published.
            lost = {e[0] for e in before.slice_endpoints()} - {e[0] for e in now.slice_endpoints()}
            wanted = [ip for ip in sorted(lost) if all(ip in w.slices for w in wants)]
            if wanted and not self.allow_transient_duplicates:
                self.violations.append(f"{request.method} {request.path} unpublished wanted IPs {wanted}")

    def _foreign(self) -> None:
        ours = [s for s in self.fake.objects("EndpointSlice", NS) if _ours(s)]
        if self.foreign == "delete":
            if ours:
                self._delete_slice(self.rng.choice(ours)["metadata"]["name"])
        else:
            targets = [("EndpointSlice", s["metadata"]["name"]) for s in ours]
            targets += [("Endpoints", SERVICE), ("Service", SERVICE)]
            kind, name = self.rng.choice(targets)
            if self.fake.get_object(kind, NS, name) is not None:
                self.touches += 1
                api = "discovery.k8s.io/v1" if kind == "EndpointSlice" else "v1"
                body = {
                    "apiVersion": api,
                    "kind": kind,
                    "metadata": {"name": name, "namespace": NS, "labels": {TOUCH_LABEL: str(self.touches)}},
                }
                self.fake.apply_as(OTHER_MANAGER, body)
        with self.lock:
            self.last = read_published(self.fake)

    def _delete_slice(self, name: str) -> None:
        # As another client would, through the fake's DELETE code path, but not
        # over HTTP: the run's faults and request log are the run's alone.
        with contextlib.suppress(FakeApiError):
            self.fake._delete(kind_of("EndpointSlice"), NS, name, {}, b"")


def release_foreign(fake: FakeApiServer) -> None:
    """The second manager gives up its fields (an apply of nothing), leaving our objects as we wrote them."""
    for kind, objs in (
        ("Service", fake.objects("Service", NS)),
        ("Endpoints", fake.objects("Endpoints", NS)),
        ("EndpointSlice", fake.objects("EndpointSlice", NS)),
    ):
        for obj in objs:
            managers = {m.get("manager") for m in obj["metadata"].get("managedFields") or ()}
            if OTHER_MANAGER in managers:
                name = obj["metadata"]["name"]
                api = obj["apiVersion"]
                meta = {"name": name, "namespace": NS}
                fake.apply_as(OTHER_MANAGER, {"apiVersion": api, "kind": kind, "metadata": meta})


def _wait_for_hung_requests(fake: FakeApiServer, since: int, limit: float) -> None:
    # A hung request is logged when the fake answers it; a hung write may land
    # after the run has given up on it (as on a real server). Wait for it
    # before the cluster changes, so every write belongs to its run.
    end = time.monotonic() + limit
    while time.monotonic() < end:
        with fake._lock:
            fired = sum(f.fired for f in fake._faults)
            logged = sum(1 for r in fake.requests[since:] if r.injected)
        if logged >= fired:
            return
        time.sleep(0.01)


def check_run(
    result: RunResult,
    settings: Settings,
    requests: Sequence[Request],
    want: Want,
    before: Published,
    after: Published,
    fired: Mapping[str, int],
    foreign: str | None,
    cap: int,
) -> list[str]:
    """Every per-run invariant of issue 3; returns the violations."""
    v: list[str] = []
    code = result.code
    # The exit code is documented, and the one reconcile_finished says the same.
    if len(result.finished) != 1:
        v.append(f"{len(result.finished)} reconcile_finished events")
    elif result.finished[0].get("exit_code") != code:
        v.append(f"exit {code} but reconcile_finished says {result.finished[0].get('exit_code')}")
    if code not in DOCUMENTED:
        v.append(f"exit {code} is not a documented code: {result.finished[-1:]} ")
    # A failure's reason is one bounded line, whatever the server sent (issue 10).
    reason_text = str(result.finished[0].get("reason") or "") if result.finished else ""
    if len(reason_text) > 512 or "\n" in reason_text:
        v.append(f"reason of {len(reason_text)} characters, not one line of at most 512")
    # The deadline holds.
    if result.seconds > settings.timeout + settings.slack:
        v.append(f"run took {result.seconds:.2f} s, deadline {settings.timeout:g} s")
    # No retry storm: retries back off (a persistent 429 with "Retry-After: 0"
    # once made ~750 requests in 2.5 s). A run here needs at most ~60 requests
    # (every node page four times over on 410s, reads, writes, a few retries).
    if len(requests) > MAX_REQUESTS_PER_RUN:
        v.append(f"{len(requests)} requests in one run: a retry storm")
    # The exit code is explained by what happened.
    transient = any(k in _TRANSIENT for k in fired)
    conflict = "409 Conflict" in fired or foreign is not None
    guard_case = want.empty and bool(before.ips())
    explained = {
        0: not guard_case,
        4: transient,
        6: conflict,
        7: guard_case,
    }.get(code, False)
    if not explained:
        reason = result.finished[0].get("reason") if result.finished else None
        v.append(f"exit {code} not explained by faults {sorted(fired)} / foreign {foreign}: {reason}")
    writes = [r for r in requests if r.method in ("PATCH", "DELETE")]
    if guard_case and writes:
        v.append(f"{len(writes)} write attempts while the guard should hold (empty set over a non-empty one)")
    # Every write attempt (landed or not) was built from the whole node list the run read.
    for r in writes:
        if r.method == "DELETE":
            if not re.fullmatch(_SLICE_ITEM, r.path) or not r.path.rsplit("/", 1)[1].startswith(
                f"{SERVICE}-"
            ):
                v.append(f"DELETE of something not ours: {r.path}")
            continue
        try:
            body = r.json()
        except ValueError:
            v.append(f"PATCH {r.path}: body is not JSON")
            continue
        kind = body.get("kind")
        if kind == "Endpoints":
            eps = _ep_list(body)
            if set(eps) != want.endpoints or len(eps) != len(want.endpoints):
                v.append(
                    f"Endpoints apply does not match the node list: extra "
                    f"{sorted(set(eps) - want.endpoints)} missing {sorted(want.endpoints - set(eps))}"
                )
        elif kind == "EndpointSlice":
            eps = _slice_list(body)
            bad = _matches_want(eps, want)
            if bad:
                v.append(f"slice apply {r.path} publishes what the node list does not justify: {bad}")
            if not eps or len(eps) > cap:
                v.append(
                    f"slice apply {r.path} has {len(eps)} endpoints (max {cap}, empty slices are deleted)"
                )
            if len({e[0] for e in eps}) != len(eps):
                v.append(f"slice apply {r.path} holds an IP twice")
            family = body.get("addressType")
            if any(ipaddress.ip_address(e[0]).version != {"IPv4": 4, "IPv6": 6}.get(family) for e in eps):
                v.append(f"slice apply {r.path}: address of the wrong family for {family}")
        elif kind != "Service":
            v.append(f"PATCH of an unexpected kind {kind}")
    # After the run: each IP once; and on success, exactly the desired state.
    v += duplicates(after)
    if code == 0 and foreign != "delete":
        if not after.service:
            v.append("exit 0 without a Service")
        if set(after.endpoints or ()) != want.endpoints:
            v.append(
                f"exit 0 but Endpoints differ from the node list: extra "
                f"{sorted(set(after.endpoints or ()) - want.endpoints)}"
                f" missing {sorted(want.endpoints - set(after.endpoints or ()))}"
            )
        got = {e[0]: (e[1], e[2]) for e in after.slice_endpoints()}
        if got != dict(want.slices):
            v.append(
                f"exit 0 but slices differ from the node list: {sorted(got.items() ^ want.slices.items())}"
            )
    if code == 7 and foreign is None and after.versions != before.versions:
        v.append("exit 7 but objects changed")
    return v


# --- the soak ------------------------------------------------------------------------------


@contextlib.contextmanager
def _request_timeout(seconds: float) -> Iterator[None]:
    saved = lib.kube.transport.REQUEST_TIMEOUT_S
    lib.kube.transport.REQUEST_TIMEOUT_S = seconds
    try:
        yield
    finally:
        lib.kube.transport.REQUEST_TIMEOUT_S = saved


def run_args(kubeconfig: str, timeout: float, cap: int, extra: Sequence[str] = ()) -> list[str]:
    return [
        "--kubeconfig",
        kubeconfig,
        "--termination-log",
        "",
        "--timeout",
        f"{timeout:g}",
        "--max-endpoints-per-slice",
        str(cap),
        *extra,
    ]


def soak(settings: Settings, progress: Callable[[str], None] | None = None) -> Figures:
    """``settings.runs`` runs under faults, then the convergence check; the figures."""
    rng = random.Random(settings.seed)
    cap = settings.max_per_slice or rng.choice([2, 3, 5, 100])
    page_cap = settings.page_cap or rng.choice([2, 3, 5])
    extra = ["--http-metrics"] if rng.random() < 0.3 else []
    figures = Figures(seeds=[settings.seed], deadline_s=settings.timeout)
    cluster = Cluster(rng, settings.max_nodes)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeApiServer(page_cap=page_cap) as fake,
        _request_timeout(settings.request_timeout),
    ):
        kubeconfig = fake.write_kubeconfig(os.path.join(tmp, "kubeconfig"))
        args = run_args(kubeconfig, settings.timeout, cap, extra)
        watch = Watch(fake)
        fake.on_request = watch
        outage_left = 0
        for i in range(settings.runs):
            # The cluster changes between runs.
            roll = rng.random()
            if outage_left:
                outage_left -= 1
                if not outage_left:
                    cluster.recover(figures.cluster_changes)
            elif roll < 0.03:
                cluster.outage(figures.cluster_changes)
                outage_left = rng.randint(1, 2)
            else:
                for _ in range(rng.choice([0, 1, 1, 2, 3])):
                    cluster.change(figures.cluster_changes)
            rollout = rng.random() < 0.03
            if rollout:
                # A config rollout (--http-metrics on or off): every object is
                # rewritten, the Service too, so faults land between many writes.
                extra = [] if extra else ["--http-metrics"]
                args = run_args(kubeconfig, settings.timeout, cap, extra)
                figures.cluster_changes["config_rollout"] += 1
            nodes = cluster.snapshot()
            fake.set_nodes(n.to_dict() for n in nodes)
            want = oracle(nodes)
            before = read_published(fake)
            faults = draw_faults(rng, settings)
            # A slice none of whose IPs is still wanted is likely deleted (unless new
            # IPs refill it): deletes are rare, so aim a fault at this one.
            emptied = any(all(e[0] not in want.slices for e in eps) for _, eps in before.slices.values())
            # Likewise the Service apply, which only a config rollout needs.
            aimed = [t for t, hit in (("slice delete", emptied), ("service apply", rollout)) if hit]
            for target in aimed:
                if rng.random() < 0.5:
                    kind = rng.choice([k for k in FAULTS if k not in _NOT_AIMED])
                    faults.append(Fault(kind, target, rng.choice([1, 1, 2, -1]), 0))
            for f in faults:
                inject(fake, f, settings)
            foreign = None
            if rng.random() < settings.foreign_rate:
                foreign = "delete" if rng.random() < 0.25 else "touch"
            since = len(fake.requests)
            watch.begin(want, foreign, random.Random(rng.random()))

            result = run_once(args)

            _wait_for_hung_requests(fake, since, settings.timeout + 2)
            fired_counts = _fired(fake)
            fake.clear_faults()
            fired: Counter[str] = Counter()
            for f, n in zip(faults, fired_counts, strict=True):
                if n:
                    fired[f.kind] += n
                    figures.fault_targets[f.target] += n
            foreign_fired = foreign if watch.foreign_done else None
            if foreign_fired:
                fired[f"second manager: {foreign_fired}"] += 1
            figures.faults.update(fired)
            after = read_published(fake)
            requests = fake.requests[since:]
            with watch.lock:
                found = watch.violations[:]
                watch.violations.clear()
            found += check_run(result, settings, requests, want, before, after, fired, foreign_fired, cap)
            figures.runs += 1
            figures.requests += len(requests)
            figures.exit_codes[result.code] += 1
            if result.finished:
                figures.outcomes[str(result.finished[0].get("outcome"))] += 1
            if result.seconds > figures.longest_s:
                figures.longest_s, figures.longest_seed = result.seconds, settings.seed
            for problem in found:
                figures.violations.append(f"seed {settings.seed} run {i}: {problem}")
            if progress and (i + 1) % 100 == 0:
                progress(f"seed {settings.seed}: {i + 1} runs, {len(figures.violations)} violations")
            if len(fake.requests) > 20000:
                fake.clear_log()  # memory: the log is only read per run

        # The faults stop: one clean run converges, a further one changes nothing.
        fake.on_request = None
        figures.writes_checked = watch.writes
        figures.violations += [
            f"seed {settings.seed} convergence: {p}" for p in converge(fake, cluster, args)
        ]
        figures.convergence_checks += 1
    figures.wall_s = time.monotonic() - started
    return figures


def _normalise(obj: Mapping[str, Any] | None) -> Any:
    """An object without what the server sets (uid, resourceVersion, time stamps, managedFields)."""
    if obj is None:
        return None
    out = json.loads(json.dumps(obj))
    meta = out.get("metadata") or {}
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
        meta.pop(key, None)
    for ref in meta.get("ownerReferences") or ():
        ref.pop("uid", None)
    return out


def _slice_shape(s: Mapping[str, Any]) -> Any:
    shape = _normalise(s)
    shape["metadata"].pop("name", None)
    shape.pop("endpoints", None)
    return shape


def converge(fake: FakeApiServer, cluster: Cluster, args: Sequence[str]) -> list[str]:
    """After the faults: one clean run reaches the fault-free state; the next one writes nothing."""
    v: list[str] = []
    fake.clear_faults()
    release_foreign(fake)
    fake.set_nodes(cluster.dicts())
    first = run_once(args)
    if first.code not in (0, 7):
        v.append(f"clean run exited {first.code}: {first.finished}")
    if first.code == 7:
        # All nodes NotReady at the end: the guard holds, as it must; converge once they return.
        cluster.recover(Counter())
        # Nodes being deleted or without a usable address stay unpublished
        # after a recovery: new nodes join until there is something to publish.
        for _ in range(50):
            if oracle(cluster.snapshot()).endpoints:
                break
            cluster._join()
        fake.set_nodes(cluster.dicts())
        first = run_once(args)
        if first.code != 0:
            v.append(f"clean run after recovery exited {first.code}: {first.finished}")
    with tempfile.TemporaryDirectory() as tmp, FakeApiServer(page_cap=fake.page_cap) as fresh:
        fresh.set_nodes(cluster.dicts())
        kubeconfig = fresh.write_kubeconfig(os.path.join(tmp, "kubeconfig"))
        fresh_args = list(args)
        fresh_args[fresh_args.index("--kubeconfig") + 1] = kubeconfig
        clean = run_once(fresh_args)
        if clean.code != 0:
            v.append(f"fault-free run on a fresh server exited {clean.code}")
        for kind in ("Service", "Endpoints"):
            got, exp = fake.get_object(kind, NS, SERVICE), fresh.get_object(kind, NS, SERVICE)
            if _normalise(got) != _normalise(exp):
                v.append(f"{kind} differs from a fault-free run's: {_normalise(got)} != {_normalise(exp)}")
        got_slices = [s for s in fake.objects("EndpointSlice", NS) if _ours(s)]
        exp_slices = fresh.objects("EndpointSlice", NS)
        cap = int(args[args.index("--max-endpoints-per-slice") + 1])
        if all(len(s.get("endpoints") or ()) < cap for s in exp_slices) and cap >= cluster.max_nodes:
            # Everything fits one slice per family: placement has no history, so equal.
            if [_normalise(s) for s in got_slices] != [_normalise(s) for s in exp_slices]:
                v.append("EndpointSlices differ from a fault-free run's")
        else:
            # Stable placement keeps history (which slice holds an IP); the same endpoints
            # per family, in well-formed slices of the same shape.
            def per_family(slices: list[dict[str, Any]]) -> dict[str, list[Endpoint]]:
                out: dict[str, list[Endpoint]] = {}
                for s in slices:
                    out.setdefault(s["addressType"], []).extend(_slice_list(s))
                return {k: sorted(e) for k, e in out.items()}

            if per_family(got_slices) != per_family(exp_slices):
                v.append("EndpointSlices publish other endpoints than a fault-free run's")
            shapes = {json.dumps(_slice_shape(s), sort_keys=True) for s in got_slices + exp_slices}
            if len(shapes) > len({s["addressType"] for s in exp_slices}):
                v.append("EndpointSlices are shaped unlike a fault-free run's")
            if any(not s.get("endpoints") or len(s["endpoints"]) > cap for s in got_slices):
                v.append("an empty or oversized EndpointSlice is left")
    before = read_published(fake).versions
    again = run_once(args)
    outcome = again.finished[0].get("outcome") if again.finished else None
    if again.code != 0 or outcome != "unchanged" or read_published(fake).versions != before:
        v.append(f"a further run changed something: exit {again.code}, outcome {outcome}")
    return v


# --- overlapping runs ---------------------------------------------------------------------------


def _spawn(args: Sequence[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "reconciler.py"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": REPO},
    )


class _Hold:
    """Holds the first two requests at one point until both runs are there (a barrier in the fake).

    With ``new_nodes``, the cluster changes right after the first node list
    is answered, so the second run reads another snapshot.
    """

    def __init__(self, fake: FakeApiServer, point: str, new_nodes: list[SimNode] | None, timeout: float):
        self.fake, self.point, self.new_nodes = fake, point, new_nodes
        self.barrier = threading.Barrier(2, timeout=timeout)
        self.lock = threading.Lock()
        self.lists = self.held = 0

    def __call__(self, request: Request) -> None:
        first_page = request.path == "/api/v1/nodes" and "continue" not in request.query
        if first_page and self.new_nodes is not None:
            with self.lock:
                self.lists += 1
                if self.lists == 1:  # this reply is already made: the next list sees the change
                    self.fake.set_nodes(n.to_dict() for n in self.new_nodes)
        hit = {
            "nodes": first_page,
            "slices": request.method == "GET" and request.path == _SLICES_PATH,
            "write": request.method in ("PATCH", "DELETE"),
        }[self.point]
        if not hit:
            return
        with self.lock:
            self.held += 1
            mine = self.held <= 2
        if mine:
            with contextlib.suppress(threading.BrokenBarrierError):
                self.barrier.wait()


def overlap(trials: int, seed: int, timeout: float = 10.0, slack: float = 2.0) -> Figures:
    """Pairs of runs started together (two processes, as two pods would be), held in step.

    The fake holds each pair at one point (after the node list, after the
    slice list, or at the first write) until both have reached it, so their
    reads and writes interleave; in some trials the cluster changes between
    the two node lists, so the two runs plan from different snapshots.
    """
    rng = random.Random(seed)
    figures = Figures(seeds=[seed], overlap_deadline_s=timeout)
    started = time.monotonic()
    for trial in range(trials):
        cap = rng.choice([1, 2, 2, 3, 100])
        cluster = Cluster(rng, 12)
        cluster.recover(Counter())
        with tempfile.TemporaryDirectory() as tmp, FakeApiServer(page_cap=rng.choice([None, 3])) as fake:
            kubeconfig = fake.write_kubeconfig(os.path.join(tmp, "kubeconfig"))
            args = run_args(kubeconfig, timeout, cap)
            fake.set_nodes(cluster.dicts())
            if run_once(args).code != 0:
                figures.violations.append(f"overlap seed {seed} trial {trial}: set-up run failed")
                continue
            # Both runs have something to write; with ``split`` the second one
            # reads a node list changed once more.
            old_nodes = _changed(cluster, figures.cluster_changes)
            split = rng.random() < 0.6
            new_nodes = _changed(cluster, figures.cluster_changes) if split else old_nodes
            fake.set_nodes(n.to_dict() for n in old_nodes)
            point = rng.choice(["nodes", "slices", "write"])
            hold = _Hold(fake, point, new_nodes if split else None, timeout=2.0)
            wants = [oracle(old_nodes), oracle(new_nodes)]
            watch = Watch(fake)
            watch.allow_transient_duplicates = True  # two writers: judged when both are done
            watch.begin(wants[0], None, rng)
            watch.alt_want = wants[1]
            watch.barrier = hold
            fake.on_request = watch
            since = len(fake.requests)
            t0 = time.monotonic()
            procs = [_spawn(args), _spawn(args)]
            outs = [p.communicate(timeout=timeout + 30) for p in procs]
            seconds = time.monotonic() - t0
            fake.on_request = None
            fake.set_nodes(n.to_dict() for n in new_nodes)
            figures.overlap_trials += 1
            figures.overlap_split_snapshots += int(split)
            figures.writes_checked += watch.writes
            figures.requests += len(fake.requests) - since
            v = list(watch.violations)
            for p, (stdout, stderr) in zip(procs, outs, strict=True):
                figures.overlap_exit_codes[p.returncode] += 1
                events = [e for e in map(_json_or_none, stdout.splitlines()) if e]
                finished = [e for e in events if e.get("event") == "reconcile_finished"]
                if len(finished) != 1 or finished[0].get("exit_code") != p.returncode:
                    v.append(
                        f"exit {p.returncode} and reconcile_finished {finished} (stderr {stderr[-300:]!r})"
                    )
                # 6: a run that kept losing the race to the other gives up (documented).
                if p.returncode not in (0, 6):
                    v.append(f"overlapping run exited {p.returncode}: {finished}")
                # The deadline starts in main(): the interpreter's start-up and imports
                # come before it (seconds on a busy machine); each run's own duration counts.
                took = max([float(e.get("duration_s") or 0) for e in finished] or [0.0])
                figures.overlap_longest_s = max(figures.overlap_longest_s, took)
                if took > timeout + slack:
                    v.append(f"an overlapping run took {took:.2f} s, deadline {timeout:g} s")
            if seconds > timeout + 30:
                v.append(f"overlapping processes took {seconds:.1f} s: a hang")
            # Left behind: each IP once, and nothing that neither node list justifies.
            after = read_published(fake)
            v += duplicates(after)
            stray = [
                e
                for e in after.slice_endpoints() + list(after.endpoints or ())
                if all(w.slices.get(e[0]) != (e[1], e[2]) for w in wants)
            ]
            if stray:
                v.append(f"published endpoints neither node list justifies: {stray}")
            # The next run converges to the final node list; the one after writes nothing.
            nxt = run_once(args)
            final = read_published(fake)
            got = {e[0]: (e[1], e[2]) for e in final.slice_endpoints()}
            if (
                nxt.code != 0
                or got != dict(wants[1].slices)
                or set(final.endpoints or ()) != wants[1].endpoints
            ):
                v.append(f"the run after the overlap did not converge (exit {nxt.code})")
            again = run_once(args)
            if again.code != 0 or read_published(fake).versions != final.versions:
                v.append("the second run after the overlap changed something")
            figures.runs += 4
            figures.exit_codes.update([nxt.code, again.code])
            figures.violations += [
                f"overlap seed {seed} trial {trial} ({point}, split={split}): {p}" for p in v
            ]
    figures.wall_s = time.monotonic() - started
    return figures


def _changed(cluster: Cluster, counts: Counter[str]) -> list[SimNode]:
    """Change the cluster until what it should publish changes (and is not empty)."""
    before = oracle(cluster.snapshot())
    for _ in range(50):
        cluster.change(counts)
        now = oracle(cluster.snapshot())
        if now != before and not now.empty:
            break
    if oracle(cluster.snapshot()).empty:
        cluster.recover(counts)
    return cluster.snapshot()


def _json_or_none(line: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


# --- command line --------------------------------------------------------------------------------


def _one_seed(args: argparse.Namespace, seed: int, say: Callable[[str], None]) -> Figures:
    settings = Settings(
        runs=args.runs,
        seed=seed,
        timeout=args.timeout,
        request_timeout=args.request_timeout,
        fault_rate=args.fault_rate,
    )
    figures = soak(settings, say)
    say(f"seed {seed}: {figures.runs} runs in {figures.wall_s:.0f} s, {len(figures.violations)} violations")
    if args.overlaps:
        o = overlap(args.overlaps, seed)
        say(f"seed {seed}: {o.overlap_trials} overlaps, {len(o.violations)} violations")
        o.seeds = []
        figures.merge(o)
    return figures


def _in_processes(args: argparse.Namespace, say: Callable[[str], None]) -> Figures:
    """One process per seed, ``--jobs`` at a time; their figures merged."""
    total = Figures()
    pending = list(args.seed)
    running: list[tuple[subprocess.Popen[str], str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        while pending or running:
            while pending and len(running) < args.jobs:
                seed = pending.pop(0)
                out = os.path.join(tmp, f"seed-{seed}.json")
                cmd = [sys.executable, "-m", "bench.soak", "--runs", str(args.runs), "--seed", str(seed)]
                cmd += ["--timeout", f"{args.timeout:g}", "--request-timeout", f"{args.request_timeout:g}"]
                cmd += [
                    "--fault-rate",
                    f"{args.fault_rate:g}",
                    "--overlaps",
                    str(args.overlaps),
                    "--json",
                    out,
                ]
                running.append((subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, text=True), out))
            time.sleep(0.2)
            for proc, out in list(running):
                if proc.poll() is None:
                    continue
                running.remove((proc, out))
                with open(out, encoding="utf-8") as src:
                    figures = Figures.from_json(json.load(src))
                say(f"seed {figures.seeds}: done, {len(figures.violations)} violations")
                total.merge(figures)
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=500, help="runs per seed (default 500)")
    parser.add_argument("--seed", type=int, nargs="+", default=[1], help="one or more seeds (default 1)")
    parser.add_argument("--timeout", type=float, default=Settings.timeout, help="--timeout of each run")
    parser.add_argument("--request-timeout", type=float, default=Settings.request_timeout)
    parser.add_argument("--fault-rate", type=float, default=Settings.fault_rate)
    parser.add_argument("--overlaps", type=int, default=0, help="pairs of overlapping runs per seed")
    parser.add_argument("--jobs", type=int, default=1, help="seeds soaked in parallel processes")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.monotonic()
    if args.jobs > 1 and len(args.seed) > 1:
        total = _in_processes(args, say)
    else:
        total = Figures()
        for seed in args.seed:
            total.merge(_one_seed(args, seed, say))
    cmd = f"python -m bench.soak --runs {args.runs} --seed {' '.join(map(str, args.seed))}"
    if args.timeout != Settings.timeout:
        cmd += f" --timeout {args.timeout:g}"
    if args.overlaps:
        cmd += f" --overlaps {args.overlaps}"
    if args.jobs > 1:
        cmd += f" --jobs {args.jobs}"
    print(total.report())
    print(f"- elapsed: {time.monotonic() - started:.0f} s")
    print(f"- reproduce: `{cmd}`")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(total.to_json(), out, indent=2)
    return 1 if total.violations else 0


if __name__ == "__main__":
    sys.exit(main())
