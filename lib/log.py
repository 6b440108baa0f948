"""structlog set up once per run: JSON lines (or console) on stdout.

The ``kubernetes`` client and urllib3 log through the stdlib; their records
are routed through the same processors so a run's output is one stream of one
format. Named ``log`` (not ``logging``) so it never shadows the stdlib.

Every line passes two guards on its way out (docs/behaviour.md "Security"): secrets the
run learnt (:func:`add_secret`: tokens, passwords, key data) are replaced by
``<redacted>`` wherever they appear, and output is bounded: strings are cut
to :data:`MAX_VALUE` characters (``reason`` to 512), and repeated warnings of
one kind are kept to :data:`WARNINGS_PER_KIND` per run, the rest counted in
one ``warnings_suppressed`` line (:func:`log_suppressed`). Python warnings
(urllib3's InsecureRequestWarning on every request) become one
``library_warning`` line per kind and run instead of raw text on stderr.
"""

from __future__ import annotations

import logging
import re
import sys
from collections import Counter
from typing import Any

import structlog

_HANDLER_NAME = "kubelet-endpoints-reconciler"
_FIRST = ("timestamp", "level", "event")

#: Longest string logged (values from the cluster: names, messages, addresses).
MAX_VALUE = 256
#: The summary's one-line failure reason (README "Exit codes").
MAX_REASON = 512
#: A traceback (debug and internal errors only) stays readable but bounded.
MAX_TRACEBACK = 16000
#: Longest list logged; lists of IPs in the summary are capped lower by the run.
MAX_ITEMS = 100
#: Warnings of one kind logged per run; the rest only counted.
WARNINGS_PER_KIND = 20
REDACTED = "<redacted>"

_secrets: set[str] = set()
_seen: Counter[str] = Counter()
_WARNING_KIND = re.compile(r":\d+: (\w+): ")


def add_secret(value: str | None) -> None:
    """Never log ``value`` (nor its repr-escaped form) for the rest of this run."""
    if not value or len(value.strip()) < 4:
        return  # a 1-3 character "secret" would redact half of every line
    for form in (value, value.strip(), repr(value)[1:-1]):
        if len(form) >= 4:
            _secrets.add(form)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``<redacted>``."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def one_line(text: str, limit: int = MAX_REASON) -> str:
    """Redacted, whitespace folded to single spaces, cut to ``limit`` characters."""
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded_value(key: str, value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        limit = MAX_REASON if key == "reason" else MAX_TRACEBACK if key == "exception" else MAX_VALUE
        value = redact(value) if _secrets else value
        return value if len(value) <= limit else value[: limit - 3] + "..."
    if depth > 6:
        return "..."
    if isinstance(value, dict):
        return {
            k: _bounded_value(key if key == "exception" else str(k), v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        items = [_bounded_value(key, v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"... {len(value) - MAX_ITEMS} more")
        return items
    return value


def _bounded(_logger: Any, _name: str, event_dict: Any) -> Any:
    # Last before rendering, for our events and the libraries' records alike.
    return {k: _bounded_value(str(k), v) for k, v in event_dict.items()}


def _library_warning(_logger: Any, _name: str, event_dict: Any) -> Any:
    # warnings.showwarning's text ("file:line: Category: message\n  source")
    # becomes a named event with the category as a field.
    if event_dict.get("logger") != "py.warnings":
        return event_dict
    text = str(event_dict.get("event", ""))
    found = _WARNING_KIND.search(text)
    category = found.group(1) if found else "Warning"
    message = text[found.end() :] if found else text
    event_dict.update(event="library_warning", category=category, message=message.splitlines()[0])
    return event_dict


def _cap(kind: str) -> int:
    return 1 if kind.startswith("library_warning:") else WARNINGS_PER_KIND


class _PerKind(logging.Filter):
    """Keep at most WARNINGS_PER_KIND warnings (one library warning) of each kind per run."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        if isinstance(record.msg, dict):
            kind = str(record.msg.get("event"))
        elif record.name == "py.warnings":
            found = _WARNING_KIND.search(str(record.msg))
            kind = "library_warning:" + (found.group(1) if found else "")
        else:
            kind = f"{record.name}:{str(record.msg)[:40]}"
        _seen[kind] += 1
        return _seen[kind] <= _cap(kind)


def log_suppressed() -> None:
    """The one line that counts the warnings left out by the per-kind cap (each kind's total), if any."""
    counts = {kind: n for kind, n in _seen.items() if n > _cap(kind)}
    if counts:
        get().warning("warnings_suppressed", totals=counts, logged_per_kind=WARNINGS_PER_KIND)


def _lead_with_event(_logger: Any, _name: str, event_dict: Any) -> Any:
    # Time, level and event name first: a JSON line reads (and greps) like a log line.
    return {**{k: event_dict[k] for k in _FIRST if k in event_dict}, **event_dict}


def configure(log_format: str = "json", level: str = "info") -> None:
    """Route structlog and stdlib logging to stdout at ``level`` in ``log_format``."""
    numeric = getattr(logging, level.upper())
    # A new run: no secrets known yet, no warnings counted.
    _secrets.clear()
    _seen.clear()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if log_format == "console":
        # A plain traceback, rendered here: structlog's default formatter is
        # rich's when rich is installed, and rich shows every frame's local
        # variables, the request's Authorization header among them.
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stdout.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        shared.append(structlog.processors.format_exc_info)
    else:
        # Tracebacks become a string field so every line stays one JSON object.
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        # No local variables in tracebacks: they are noise, and may hold a token.
        no_locals = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        shared.extend([structlog.processors.ExceptionRenderer(no_locals), _lead_with_event])

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Tests call main() many times in one process with other streams.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # Records from the client and urllib3 say which library they come from.
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _library_warning,
                _bounded,
                renderer,
            ],
        )
    )
    handler.addFilter(_PerKind())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # The client's and urllib3's own chatter is only useful when debugging.
    for noisy in ("urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(numeric if numeric <= logging.DEBUG else logging.WARNING)
    # Python warnings through the same pipeline (library_warning, once per
    # kind and run: urllib3 asks for its InsecureRequestWarning on every
    # request), not as raw text on stderr.
    logging.captureWarnings(True)


def get() -> Any:
    """The project's logger (a structlog BoundLogger)."""
    return structlog.get_logger("kubelet_endpoints")
