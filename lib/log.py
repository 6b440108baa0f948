"""structlog set up once per run: JSON lines (or console) on stdout.

The ``kubernetes`` client and urllib3 log through the stdlib; their records
are routed through the same processors so a run's output is one stream of one
format. Named ``log`` (not ``logging``) so it never shadows the stdlib.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_HANDLER_NAME = "kubelet-endpoints-reconciler"
_FIRST = ("timestamp", "level", "event")


def _lead_with_event(_logger: Any, _name: str, event_dict: Any) -> Any:
    # Time, level and event name first: a JSON line reads (and greps) like a log line.
    return {**{k: event_dict[k] for k in _FIRST if k in event_dict}, **event_dict}


def configure(log_format: str = "json", level: str = "info") -> None:
    """Route structlog and stdlib logging to stdout at ``level`` in ``log_format``."""
    numeric = getattr(logging, level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
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
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # The client's and urllib3's own chatter is only useful when debugging.
    for noisy in ("urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(numeric if numeric <= logging.DEBUG else logging.WARNING)


def get() -> Any:
    """The project's logger (a structlog BoundLogger)."""
    return structlog.get_logger("kubelet_endpoints")
