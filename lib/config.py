"""Command line and environment: one frozen :class:`Config` per run.

Every flag also reads ``KUBELET_ENDPOINTS_<FLAG>`` (``--kubeconfig`` reads
``KUBECONFIG``); the flag wins over the variable (README "Command line").
Every bad value raises :class:`~lib.exitcodes.UsageError` (exit 2).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

from lib.exitcodes import MEANING, UsageError

ENV_PREFIX = "KUBELET_ENDPOINTS_"
RESOURCES = ("endpoints", "endpointslices")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_SLICE_CAPACITY = 1000  # the API server's own limit per EndpointSlice

# Matched with fullmatch, never match: "$" also matches before a trailing
# newline, and "kube-system\n" would reach the API server (and fail only
# there, after requests, as a rejected write).
# A DNS-1123 label (namespace and slice names must be one).
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# A DNS-1035 label: a Service name must start with a letter, or the API server
# refuses it ("1kubelet"), after the run's reads.
# https://kubernetes.io/docs/concepts/overview/working-with-objects/names/#rfc-1035-label-names
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# A label value (the field manager is also the managed-by label value).
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
# Numbers in ASCII only: int() and float() also take fullwidth and Arabic-Indic
# digits, and surrounding whitespace, which no operator means to type.
_INTEGER = re.compile(r"[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"([0-9]+(\.[0-9]*)?|\.[0-9]+)", re.ASCII)
#: Boolean flags: each has a --no- form, so a flag can undo its environment variable.
BOOLEAN_FLAGS = ("http_metrics", "dry_run", "allow_empty", "take_over")
# Longest suffix we add to the service name: "-ipv6-" plus a slice number.
_SLICE_SUFFIX_ROOM = len("-ipv6-") + 4
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class Config:
    """Everything a run needs to know, built once from flags and environment."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = "kube-system"
    service_name: str = "kubelet"
    node_selector: str = ""
    address_type: str = "internal"
    resources: tuple[str, ...] = RESOURCES
    max_endpoints_per_slice: int = 100
    http_metrics: bool = False
    field_manager: str = "kubelet-endpoints-reconciler"
    dry_run: bool = False
    timeout: float = 50.0
    allow_empty: bool = False
    take_over: bool = False
    log_format: str = "json"
    log_level: str = "info"
    termination_log: str = "/dev/termination-log"

    @property
    def manages_endpoints(self) -> bool:
        return "endpoints" in self.resources

    @property
    def manages_slices(self) -> bool:
        return "endpointslices" in self.resources

    def as_log_fields(self) -> dict[str, Any]:
        """The config as flat log fields (lists for tuples, JSON-friendly)."""
        fields = asdict(self)
        fields["resources"] = list(self.resources)
        return fields


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and calling ``sys.exit(2)``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> _Parser:
    codes = "\n".join(f"  {code.value}  {text}" for code, text in MEANING.items())
    p = _Parser(
        prog="reconciler.py",
        description=(
            "Keep the kubelet Service, Endpoints and EndpointSlices correct: "
            "Ready nodes only, every IP exactly once. Every flag also reads "
            f"{ENV_PREFIX}<FLAG> (--kubeconfig reads KUBECONFIG)."
        ),
        epilog=f"exit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Only the documented flags: argparse would otherwise read "--name x"
        # as "--namespace x" and write into the wrong namespace.
        allow_abbrev=False,
    )
    add = p.add_argument
    add("--kubeconfig", metavar="PATH", help="kubeconfig file (default: in-cluster, else ~/.kube/config)")
    add("--context", metavar="NAME", help="kubeconfig context (default: current)")
    add("--namespace", metavar="NS", help="namespace of the objects (default: kube-system)")
    add("--service-name", metavar="NAME", help="Service and Endpoints name, slice prefix (default: kubelet)")
    add("--node-selector", metavar="SEL", help="label selector for the node list (default: all nodes)")
    add("--address-type", metavar="TYPE", help="preferred node address: internal (default) or external")
    add("--resources", metavar="LIST", help="comma list of endpoints,endpointslices (default: both)")
    add("--max-endpoints-per-slice", metavar="N", help="1..1000 (default: 100)")
    add("--http-metrics", action=argparse.BooleanOptionalAction, help="also publish the read-only port 10255")
    add("--field-manager", metavar="NAME", help="SSA field manager and managed-by label")
    add("--dry-run", action=argparse.BooleanOptionalAction, help="server-side dry run (dryRun=All)")
    add("--timeout", metavar="SECONDS", help="deadline for the whole run, retries included (default: 50)")
    add(
        "--allow-empty",
        action=argparse.BooleanOptionalAction,
        help="allow publishing an empty set over a non-empty one",
    )
    add(
        "--take-over",
        action=argparse.BooleanOptionalAction,
        help="make our objects wholly ours and delete foreign slices of our Service",
    )
    add("--log-format", metavar="FORMAT", help="json lines (default) or console")
    add("--log-level", metavar="LEVEL", help="debug, info (default), warning, error")
    add(
        "--termination-log",
        metavar="PATH",
        help="where a failure's reason is written if writable (default: /dev/termination-log; empty: off)",
    )
    return p


def _env_name(dest: str) -> str:
    return "KUBECONFIG" if dest == "kubeconfig" else ENV_PREFIX + dest.upper()


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _bool(dest: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"{_env_name(dest)}={raw!r}: expected true or false")


def _number(dest: str, raw: str, kind: type[int] | type[float]) -> float:
    grammar = _INTEGER if kind is int else _DECIMAL
    if not grammar.fullmatch(raw):
        what = "a whole number" if kind is int else "a number"
        raise UsageError(f"{_flag(dest)} {raw!r}: not {what} (ASCII digits only)")
    return kind(raw)


def _utf8(dest: str, raw: str) -> str:
    # A non-UTF-8 byte in argv or the environment arrives as a lone surrogate
    # (PEP 383); sent to the API server it would fail as an encoding error.
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{_flag(dest)}: the value is not valid UTF-8") from None
    return raw


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """``KUBELET_ENDPOINTS_*`` variables that name no flag (a misspelling), sorted."""
    known = {_env_name(a.dest) for a in _parser()._actions if a.dest != "help"}
    return sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in known)


def termination_log_path(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """``--termination-log`` (or its variable) read alone, for a run whose other flags failed to parse."""
    path = environ.get(_env_name("termination_log"), Config.termination_log)
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--termination-log" and i + 1 < len(args):
            path = args[i + 1]  # argparse: the last one wins
        elif arg.startswith("--termination-log="):
            path = arg.partition("=")[2]
    return path


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Build the run's :class:`Config`; raise :class:`UsageError` on any bad value."""
    args = vars(_parser().parse_args(list(argv)))
    raw: dict[str, str] = {}
    for dest, value in args.items():
        if isinstance(value, bool):  # --flag / --no-flag
            value = "true" if value else "false"
        if value is None:
            value = environ.get(_env_name(dest))
            # An empty variable means "not set" (a common Helm/kustomize leftover),
            # except where empty is itself meaningful.
            if value == "" and dest not in ("node_selector", "termination_log"):
                value = None
        if value is not None:
            raw[dest] = _utf8(dest, value)

    defaults = Config()
    values: dict[str, Any] = {}
    for dest, value in raw.items():
        if dest in BOOLEAN_FLAGS:
            values[dest] = _bool(dest, value)
        elif dest == "max_endpoints_per_slice":
            values[dest] = int(_number(dest, value, int))
        elif dest == "timeout":
            values[dest] = float(_number(dest, value, float))
        elif dest == "resources":
            values[dest] = _resources(value)
        else:
            values[dest] = value
    cfg = Config(**{**asdict(defaults), **values})
    _validate(cfg)
    return cfg


def _resources(raw: str) -> tuple[str, ...]:
    items = [item.strip() for item in raw.split(",") if item.strip()]
    unknown = sorted(set(items) - set(RESOURCES))
    if unknown:
        raise UsageError(f"--resources: unknown {', '.join(unknown)} (expected {','.join(RESOURCES)})")
    if not items:
        raise UsageError("--resources: name at least one of " + ",".join(RESOURCES))
    # Canonical order, duplicates folded: the Config compares and logs stably.
    return tuple(r for r in RESOURCES if r in items)


def _validate(cfg: Config) -> None:
    if cfg.address_type not in ("internal", "external"):
        raise UsageError(f"--address-type {cfg.address_type!r}: expected internal or external")
    if cfg.log_format not in ("json", "console"):
        raise UsageError(f"--log-format {cfg.log_format!r}: expected json or console")
    if cfg.log_level not in LOG_LEVELS:
        raise UsageError(f"--log-level {cfg.log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
    if not 1 <= cfg.max_endpoints_per_slice <= MAX_SLICE_CAPACITY:
        raise UsageError(
            f"--max-endpoints-per-slice {cfg.max_endpoints_per_slice}: must be 1..{MAX_SLICE_CAPACITY}"
        )
    # The run must end before the next minute's run starts; an hour is already absurd.
    if not 0 < cfg.timeout <= 3600:
        raise UsageError(f"--timeout {cfg.timeout:g}: must be more than 0 and at most 3600 seconds")
    if not _DNS_LABEL.fullmatch(cfg.namespace) or len(cfg.namespace) > 63:
        raise UsageError(f"--namespace {cfg.namespace!r}: not a valid namespace name")
    if not _DNS1035_LABEL.fullmatch(cfg.service_name) or len(cfg.service_name) > 63 - _SLICE_SUFFIX_ROOM:
        raise UsageError(
            f"--service-name {cfg.service_name!r}: must be a Service name (DNS-1035 label: a lower-case"
            f" letter first, then letters, digits or '-', ending in a letter or digit) of at most"
            f" {63 - _SLICE_SUFFIX_ROOM} characters (slice names add a suffix)"
        )
    if not _LABEL_VALUE.fullmatch(cfg.field_manager) or len(cfg.field_manager) > 63:
        raise UsageError(
            f"--field-manager {cfg.field_manager!r}: must be a valid label value (it is the managed-by label)"
        )
    if cfg.context == "":
        raise UsageError("--context: empty name")
