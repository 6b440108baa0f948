"""Exit codes (README "Exit codes", docs/operations.md runbooks) and the exceptions that carry them.

Alerting routes on these numbers, so they are defined once, here, and every
failure is raised as one of the exceptions below; ``reconciler.main`` maps an
exception to its code in one place. Anything else that escapes is a bug
(exit 1).
"""

from __future__ import annotations

import signal
from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """Process exit status; the README's table is checked against this."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    CONFIG = 3
    API_UNAVAILABLE = 4
    FORBIDDEN = 5
    WRITE_REJECTED = 6
    SAFETY_GUARD = 7


#: One line per code, used by ``--help`` and checked against the README.
MEANING: dict[ExitCode, str] = {
    ExitCode.OK: "success: objects applied, or already up to date",
    ExitCode.INTERNAL: "unexpected internal error (a bug)",
    ExitCode.USAGE: "usage error (bad flag or value)",
    ExitCode.CONFIG: "configuration error: no usable kubeconfig / in-cluster credentials",
    ExitCode.API_UNAVAILABLE: (
        "Kubernetes API unavailable: transient errors (connection, timeout, 429, 5xx)"
        " persisted until the deadline"
    ),
    ExitCode.FORBIDDEN: "unauthorized or forbidden (401/403): credentials or RBAC",
    ExitCode.WRITE_REJECTED: (
        "a write was rejected by the API (400, 409, 422, ...),"
        " or would be: a Service of our name is another tool's"
    ),
    ExitCode.SAFETY_GUARD: (
        "safety guard: the run would replace a non-empty endpoint set with an empty one (see `--allow-empty`)"
    ),
}


class ReconcileError(Exception):
    """A failure with a documented exit code and a one-line reason."""

    exit_code: ClassVar[ExitCode] = ExitCode.INTERNAL

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UsageError(ReconcileError):
    """A bad flag, environment variable or value (exit 2)."""

    exit_code = ExitCode.USAGE


class ConfigError(ReconcileError):
    """No usable kubeconfig or in-cluster credentials, or TLS set-up failed (exit 3)."""

    exit_code = ExitCode.CONFIG


class ApiUnavailable(ReconcileError):
    """Transient API errors lasted until the deadline, or the API answered garbage (exit 4)."""

    exit_code = ExitCode.API_UNAVAILABLE


class Forbidden(ReconcileError):
    """401 or 403: credentials or RBAC are wrong; retrying cannot help (exit 5)."""

    exit_code = ExitCode.FORBIDDEN


class WriteRejected(ReconcileError):
    """The API refused a write (400, 409, 422, ...) (exit 6)."""

    exit_code = ExitCode.WRITE_REJECTED


class SafetyGuard(ReconcileError):
    """The run would replace a non-empty endpoint set with an empty one (exit 7)."""

    exit_code = ExitCode.SAFETY_GUARD


class Interrupted(BaseException):
    """SIGTERM or SIGINT stopped the run (exit 128+N).

    A BaseException, like KeyboardInterrupt: no ``except Exception`` in the
    client, urllib3 or tenacity may swallow it or retry after it.
    """

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}")
        self.reason = f"interrupted by {name}"
        self.exit_code = 128 + signum
