"""One run, end to end: config, node list, desired state, writes, exit code.

``main`` is the only place where failures become exit codes (SPEC "Exit
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
from dataclasses import dataclass, field
from typing import Any

from lib import config, desired, interrupts, kube, log, plan
from lib.config import Config
from lib.exitcodes import ExitCode, Interrupted, ReconcileError, SafetyGuard, UsageError
from lib.kube import Api, Conflict, Deadline, load_client, object_path
from lib.plan import Apply, Live

#: Lists of IPs in the summary line are cut to this many (counts stay exact).
SUMMARY_CAP = 20
#: A slice write refused because the slice changed since we read it (an
#: overlapping run) makes the run read the live objects and plan again.
MAX_REPLANS = 3


@dataclass
class Summary:
    """What ``reconcile_finished`` reports; filled in as the run goes."""

    outcome: str = "failed"
    nodes_total: int | None = None
    nodes_eligible: int | None = None
    ip_conflicts: int = 0
    addresses: int = 0
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    writes: int = 0
    requests: int = 0

    def fields(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "nodes_total": self.nodes_total,
            "nodes_eligible": self.nodes_eligible,
            "ip_conflicts": self.ip_conflicts,
            "addresses": self.addresses,
            "added": self.added[:SUMMARY_CAP],
            "added_count": len(self.added),
            "removed": self.removed[:SUMMARY_CAP],
            "removed_count": len(self.removed),
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
            # removed on every exit, a signal's included (SPEC "Safety").
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
    nodes, pages = api.list_nodes(cfg.node_selector)
    sel = desired.select(nodes, cfg.address_type)
    del nodes  # only the selection is needed from here on
    summary.nodes_total, summary.nodes_eligible = sel.nodes_total, sel.nodes_eligible
    summary.ip_conflicts = len(sel.conflicts)
    summary.addresses = len(sel.ips())
    logger.info("nodes_listed", nodes_total=sel.nodes_total, nodes_eligible=sel.nodes_eligible, pages=pages)
    for skip in sel.skips:
        logger.warning("node_skipped", node=skip.node, reason=skip.reason, address=skip.address)
    for c in sel.conflicts:
        logger.warning("ip_conflict", ip=c.ip, winner=c.winner, losers=list(c.losers))

    for attempt in range(MAX_REPLANS + 1):
        live = _read_live(cfg, api)
        if attempt == 0:
            d = desired.diff(sel.ips(), plan.live_ips(cfg, live))
            summary.added, summary.removed = d.added, d.removed
        try:
            written = _write(cfg, api, logger, sel, live)
        except Conflict as exc:
            if attempt == MAX_REPLANS:
                raise
            logger.warning("write_conflict", reason=exc.reason, attempt=attempt + 1)
            continue
        summary.writes += written
        twice = (
            plan.ips_in_two_slices(cfg, _list_slices(cfg, api))
            if written and cfg.manages_slices and not cfg.dry_run
            else []
        )
        if not twice:
            break
        # The resourceVersion guards each slice, not the set: a run overlapping
        # ours that read another node list can have put one new IP in another
        # slice (in its view that one had room). Plan again from what is there
        # now; placement keeps the first copy. The run that wrote second always
        # sees both writes here.
        reason = f"{len(twice)} IPs in two slices after an overlapping run's write: {', '.join(twice[:5])}"
        if attempt == MAX_REPLANS:
            raise Conflict(reason)
        logger.warning("write_conflict", reason=reason, attempt=attempt + 1)
    summary.outcome = "dry_run" if cfg.dry_run else "applied" if summary.writes else "unchanged"


def _read_live(cfg: Config, api: Api) -> Live:
    ns, name = cfg.namespace, cfg.service_name
    service = api.get(object_path("Service", ns, name))
    endpoints = api.get(object_path("Endpoints", ns, name)) if cfg.manages_endpoints else None
    slices = _list_slices(cfg, api) if cfg.manages_slices else ()
    return Live(service, endpoints, slices)


def _list_slices(cfg: Config, api: Api) -> tuple[dict[str, Any], ...]:
    """Every slice labelled with our Service's name (ours and foreign ones)."""
    items = api.list(
        object_path("EndpointSlice", cfg.namespace), f"{desired.SERVICE_NAME_LABEL}={cfg.service_name}"
    )
    return tuple(s for s in items if isinstance((s.get("metadata") or {}).get("name"), str))


def _write(cfg: Config, api: Api, logger: Any, sel: desired.Selection, live: Live) -> int:
    """Apply what differs from ``live``; return the number of writes."""
    if plan.empties_live_set(cfg, sel, live) and not cfg.allow_empty:
        raise SafetyGuard(
            f"refusing to replace {len(plan.live_ips(cfg, live))} published IPs with none"
            f" ({sel.nodes_eligible} eligible of {sel.nodes_total} nodes); --allow-empty permits it"
        )
    writes = 0

    def apply(a: Apply) -> dict[str, Any]:
        nonlocal writes
        path = object_path(a.kind, cfg.namespace, a.name)
        result = api.apply(path, desired.encode(a.body), cfg.field_manager, cfg.dry_run)
        writes += 1
        rv = (result.get("metadata") or {}).get("resourceVersion")
        logger.info("object_applied", kind=a.kind, name=a.name, resource_version=rv, dry_run=cfg.dry_run)
        return result

    service = desired.service(cfg)
    current = live.service
    if not plan.up_to_date(current, service, cfg.field_manager):
        current = apply(Apply("Service", cfg.service_name, service))
    service_uid = (current or {}).get("metadata", {}).get("uid")

    if cfg.manages_endpoints:
        ep = desired.endpoints(cfg, sel)
        if ep.truncated_from:
            logger.warning(
                "endpoints_truncated",
                addresses=ep.truncated_from,
                written=desired.ENDPOINTS_CAPACITY,
                annotation=desired.OVER_CAPACITY,
            )
        if not plan.up_to_date(live.endpoints, ep.body, cfg.field_manager):
            apply(Apply("Endpoints", cfg.service_name, ep.body))

    if cfg.manages_slices:
        sp = plan.slices(cfg, sel, live.slices, service_uid)
        if sp.foreign:
            logger.warning(
                "foreign_endpointslices",
                names=list(sp.foreign),
                hint="slices for this Service written by another manager: they publish duplicate targets",
            )
        for a in sp.shrink:
            apply(a)
        for a in sp.grow:
            apply(a)
        # Deletes last: when the published IPs change family (IPv4 slice
        # emptied, IPv6 slice new), deleting first would publish no slice at
        # all until the create, and leave none if the create fails. An emptied
        # slice holds no IP that another slice gains, so no IP is held twice.
        for d in sp.deletes:
            api.delete(object_path("EndpointSlice", cfg.namespace, d.name), cfg.dry_run, d.resource_version)
            writes += 1
            logger.info("endpointslice_deleted", name=d.name, dry_run=cfg.dry_run)
    return writes
