"""One run, end to end: config, node list, desired state, writes, exit code.

``main`` is the only place where failures become exit codes (README "Exit
codes") and where the one ``reconcile_finished`` event of a run is logged,
successful or not.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from operator import attrgetter
from typing import Any

from lib import config, desired, interrupts, kube, log, plan
from lib.config import Config
from lib.exitcodes import ExitCode, Interrupted, ReconcileError, SafetyGuard, UsageError, WriteRejected
from lib.kube import Api, Deadline, WriteConflict, load_client, object_path
from lib.live import Live, LiveObject, view
from lib.nodes import Node, NodeItem, node_of

#: Lists of IPs in the summary line are cut to this many (counts stay exact).
SUMMARY_CAP = 20
#: A slice write refused because the slice changed since we read it (an
#: overlapping run) makes the run read the live objects and plan again.
MAX_REPLANS = 3
#: Other Services of this label are scraped by the kubelet ServiceMonitor too
#: (docs/behaviour.md "Other writers").
KUBELET_SERVICE_SELECTOR = "k8s-app=kubelet"


def node_items(address_type: str) -> kube.ListItems[NodeItem, Node]:
    """How the node list is decoded (the transport knows no Node): each item its Node as its page is read."""
    return kube.ListItems(
        NodeItem,
        partial(node_of, address_type=address_type),
        attrgetter("name"),
        restarted="node_list_restarted",
    )


@dataclass
class Summary:
    """What ``reconcile_finished`` reports; filled in as the run goes."""

    outcome: str = "failed"
    nodes_total: int | None = None
    nodes_eligible: int | None = None
    ip_conflicts: int = 0
    addresses: int = 0
    changes: plan.Changes = field(default_factory=plan.Changes)
    writes: int = 0
    requests: int = 0

    def fields(self) -> dict[str, Any]:
        c = self.changes
        return {
            "outcome": self.outcome,
            "nodes_total": self.nodes_total,
            "nodes_eligible": self.nodes_eligible,
            "ip_conflicts": self.ip_conflicts,
            "addresses": self.addresses,
            "added": c.added[:SUMMARY_CAP],
            "added_count": len(c.added),
            "removed": c.removed[:SUMMARY_CAP],
            "removed_count": len(c.removed),
            "reassigned": [{"ip": r.ip, "from": r.before, "to": r.after} for r in c.reassigned[:SUMMARY_CAP]],
            "reassigned_count": len(c.reassigned),
            "writes": self.writes,
            "requests": self.requests,
        }


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run once; return the exit code (never raises, never leaves a traceback unlogged)."""
    started = time.monotonic()
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    with interrupts.installed():
        try:
            return _main(argv, environ, Summary(), started)
        finally:
            # Decoded client keys and certificates the client wrote to $TMPDIR:
            # removed on every exit, a signal's included (docs/behaviour.md "Safety").
            kube.remove_temp_files()


def _main(argv: Sequence[str], environ: Mapping[str, str], summary: Summary, started: float) -> int:
    try:
        cfg = config.parse(argv, environ)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except UsageError as exc:
        log.configure()
        print(f"reconciler.py: error: {log.one_line(exc.reason)} (see --help)", file=sys.stderr)
        # The flags were not all valid, but --termination-log (or its
        # variable) still says where the message goes, or that it goes nowhere.
        fallback = Config(termination_log=config.termination_log_path(argv, environ))
        return _finish(fallback, summary, started, exc.exit_code, exc.reason)

    log.configure(cfg.log_format, cfg.log_level)
    logger = log.get()
    logger.info("reconcile_started", **cfg.as_log_fields())
    for name in config.unknown_environment(environ):
        logger.warning("unknown_environment_variable", name=name, hint="names no flag: misspelt?")
    try:
        reconcile(cfg, environ, logger, summary)
        interrupts.check()  # a signal after the last request still fails the run
    except Interrupted as exc:
        return _finish(cfg, summary, started, exc.exit_code, exc.reason)
    except ReconcileError as exc:
        if cfg.log_level == "debug":
            logger.debug("failure_traceback", exc_info=True)
        return _finish(cfg, summary, started, exc.exit_code, exc.reason)
    except Exception as exc:
        logger.error("internal_error", exc_info=True)
        return _finish(cfg, summary, started, ExitCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    return _finish(cfg, summary, started, ExitCode.OK, None)


def _finish(cfg: Config, summary: Summary, started: float, code: int, reason: str | None) -> int:
    log.log_suppressed()
    fields = summary.fields()
    if code != ExitCode.OK:
        reason = log.one_line(reason or "")
        fields["outcome"] = "failed"
        fields["reason"] = reason
        _write_termination_message(cfg.termination_log, f"exit {int(code)}: {reason}")
    level = logging.INFO if code == ExitCode.OK else logging.ERROR
    duration = round(time.monotonic() - started, 3)
    log.get().log(level, "reconcile_finished", exit_code=int(code), duration_s=duration, **fields)
    return int(code)


def _write_termination_message(path: str, message: str) -> None:
    """Write ``message`` to an existing, writable regular file at ``path``; otherwise nothing.

    Never created (run by hand, the run must not leave /dev/termination-log
    behind), never through a symlink (O_NOFOLLOW), never a FIFO or device
    (O_NONBLOCK, then fstat), never a file without write permission bits
    (root bypasses them, so os.access would say yes). The kubelet creates
    the file before the container starts.
    https://kubernetes.io/docs/tasks/debug/debug-application/determine-reason-pod-failure/
    """
    if not path:
        return
    try:
        before = os.lstat(path)
        if not stat.S_ISREG(before.st_mode):
            return
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o222 or st.st_ino != before.st_ino:
            return
        os.ftruncate(fd, 0)
        os.write(fd, (message + "\n").encode("utf-8")[:4000])  # the kubelet keeps at most 4096 bytes
    except OSError:
        pass
    finally:
        os.close(fd)


def reconcile(cfg: Config, environ: Mapping[str, str], logger: Any, summary: Summary) -> None:
    """List, select, plan and write; raise a :class:`ReconcileError` on failure."""
    deadline = Deadline(cfg.timeout)
    with deadline.enforced():
        api = Api(load_client(cfg.kubeconfig, cfg.context, environ), deadline, logger)
        try:
            _reconcile(cfg, api, logger, summary)
        finally:
            summary.requests = api.requests


def _reconcile(cfg: Config, api: Api, logger: Any, summary: Summary) -> None:
    sel = _select(cfg, api, logger, summary)
    live = _read_live(cfg, api)
    summary.changes = plan.changes(cfg, sel, live)
    versions = _slice_versions(live)  # each slice of ours at the version our writes leave it
    made, replans, logged = summary.writes, 0, list[plan.Warning]()
    while True:
        p, live = _plan(cfg, api, sel, live)
        for w in p.warnings:
            if replans == 0 and w not in logged:  # the first plan's, and its continuation's new ones
                logged.append(w)
                logger.warning(w.event, **w.fields)
        if p.refused:
            raise WriteRejected(p.refused)
        if p.empties and not cfg.allow_empty:
            raise SafetyGuard(
                f"refusing to replace {p.empties} published IPs with none"
                f" ({sel.nodes_eligible} eligible of {sel.nodes_total} nodes); --allow-empty permits it"
            )
        try:
            for step in p.steps:
                answer = _write(cfg, api, logger, step)
                summary.writes += 1
                if isinstance(step, plan.Delete):
                    versions.pop(step.name, None)
                elif step.kind == "EndpointSlice":
                    versions[step.name] = str((answer.get("metadata") or {}).get("resourceVersion") or "")
                elif step.kind == "Service":
                    live = replace(live, service=view(answer, "Service", cfg.field_manager))
            if not p.complete:
                # The Service is new: plan the rest with its uid, from the apply's
                # answer (a dry run stores nothing to read back).
                continue
            wrote = summary.writes > made and cfg.manages_slices and not cfg.dry_run
            twice = _ips_in_two_slices(cfg, api, versions) if wrote else []
            if not twice:
                break
            # The resourceVersion guards each slice, not the set: a run overlapping
            # ours that read another node list can have put one new IP in another
            # slice (in its view that one had room). Plan again from what is there
            # now; placement keeps the first copy. The run that wrote second always
            # sees both writes here.
            reason = (
                f"{len(twice)} IPs in two slices after an overlapping run's write: {', '.join(twice[:5])}"
            )
        except WriteConflict as exc:
            reason = exc.reason
        if replans == MAX_REPLANS:
            raise WriteConflict(reason)
        replans += 1
        logger.warning("write_conflict", reason=reason, attempt=replans)
        live = _read_live(cfg, api)
        versions, made = _slice_versions(live), summary.writes
    summary.outcome = "dry_run" if cfg.dry_run else "applied" if summary.writes else "unchanged"


def _select(cfg: Config, api: Api, logger: Any, summary: Summary) -> desired.Selection:
    """List the nodes and select who is published at which IPs; log what was left out."""
    nodes, pages = api.list_nodes(cfg.node_selector, node_items(cfg.address_type))
    sel = desired.select(nodes)
    summary.nodes_total, summary.nodes_eligible = sel.nodes_total, sel.nodes_eligible
    summary.ip_conflicts = len(sel.conflicts)
    summary.addresses = len(sel.ips())
    logger.info("nodes_listed", nodes_total=sel.nodes_total, nodes_eligible=sel.nodes_eligible, pages=pages)
    for skip in sel.skips:
        logger.warning("node_skipped", node=skip.node, reason=skip.reason, address=skip.address)
    for c in sel.conflicts:
        logger.warning("ip_conflict", ip=c.ip, winner=c.winner, losers=list(c.losers))
    return sel


def _slice_versions(live: Live) -> dict[str, str]:
    return {s.name: s.resource_version or "" for s in live.slices}


def _plan(cfg: Config, api: Api, sel: desired.Selection, live: Live) -> tuple[plan.Plan, Live]:
    """The plan, with no new slice named as one of another Service (and the live view it used).

    Our slice list is by our Service's label, so a slice of another Service
    named as ours would be is unseen there, and a forced apply by name would
    take it over. Only a plan that creates a slice lists the namespace's
    other slices (every slice not labelled for our Service; an unchanged run
    makes no such list; a list, not a GET by name: the Role grants list, not
    get, on slices), and plans around their names.
    """
    p = plan.build(cfg, sel, live)
    new = plan.new_slices(p, live)
    if not new:
        return p, live
    others = [
        view(s, "EndpointSlice", cfg.field_manager)
        for s in api.list(
            object_path("EndpointSlice", cfg.namespace), f"{desired.SERVICE_NAME_LABEL}!={cfg.service_name}"
        )
    ]
    taken = [o for o in others if o.name in new]
    if not taken:
        return p, live
    live = replace(
        live, other_slice_names=frozenset(o.name for o in others), name_taken=(*live.name_taken, *taken)
    )
    return plan.build(cfg, sel, live), live


def _read_live(cfg: Config, api: Api) -> Live:
    """Everything the plan needs from the API server, read once and slimmed."""
    ns, name, fm = cfg.namespace, cfg.service_name, cfg.field_manager
    service = api.get(object_path("Service", ns, name))
    endpoints = api.get(object_path("Endpoints", ns, name)) if cfg.manages_endpoints else None
    slices = _list_slices(cfg, api) if cfg.manages_slices else ()
    kubelet_services = api.list(object_path("Service", ns), KUBELET_SERVICE_SELECTOR)
    return Live(
        service=view(service, "Service", fm) if service is not None else None,
        endpoints=view(endpoints, "Endpoints", fm) if endpoints is not None else None,
        slices=slices,
        kubelet_services=tuple(
            sorted(n for s in kubelet_services if (n := str((s.get("metadata") or {}).get("name"))) != name)
        ),
    )


def _list_slices(cfg: Config, api: Api) -> tuple[LiveObject, ...]:
    """Every slice labelled with our Service's name (ours and foreign ones), slimmed."""
    items = api.list(
        object_path("EndpointSlice", cfg.namespace), f"{desired.SERVICE_NAME_LABEL}={cfg.service_name}"
    )
    return tuple(
        view(s, "EndpointSlice", cfg.field_manager)
        for s in items
        if isinstance((s.get("metadata") or {}).get("name"), str)
    )


def _ips_in_two_slices(cfg: Config, api: Api, versions: Mapping[str, str]) -> list[str]:
    """After our writes: IPs another run's writes left in a second slice of ours.

    Each slice's resourceVersion comes first (a metadata-only list, a
    twentieth of the slices): when every one is the version our reads and
    writes left, no one else wrote. Only otherwise are the slices read whole.
    """
    selector = f"{desired.SERVICE_NAME_LABEL}={cfg.service_name}"
    if api.versions(object_path("EndpointSlice", cfg.namespace), selector) == versions:
        return []
    return plan.ips_in_two_slices(_list_slices(cfg, api))


def _write(cfg: Config, api: Api, logger: Any, step: plan.Step) -> Mapping[str, Any]:
    """Make one write of a plan and log it; the API server's answer ({} for a delete)."""
    if isinstance(step, plan.Delete):
        api.delete(object_path("EndpointSlice", cfg.namespace, step.name), cfg.dry_run, step.resource_version)
        if step.foreign:
            logger.info("foreign_endpointslice_deleted", name=step.name, dry_run=cfg.dry_run)
        else:
            logger.info("endpointslice_deleted", name=step.name, dry_run=cfg.dry_run)
        return {}
    path = object_path(step.kind, cfg.namespace, step.name)
    if isinstance(step, plan.Remove):
        answer = api.json_patch(path, step.ops, cfg.dry_run)
        logger.info(
            "foreign_fields_removed",
            kind=step.kind,
            name=step.name,
            fields=list(step.fields),
            resource_version=(answer.get("metadata") or {}).get("resourceVersion"),
            dry_run=cfg.dry_run,
        )
        return answer
    answer = api.apply(path, desired.encode(step.body), cfg.field_manager, cfg.dry_run)
    rv = (answer.get("metadata") or {}).get("resourceVersion")
    logger.info("object_applied", kind=step.kind, name=step.name, resource_version=rv, dry_run=cfg.dry_run)
    return answer
