"""One in-process reconciler run for tests: its exit code and its parsed log lines.

Every test that runs ``lib.run.main`` goes through :func:`run_main`, which
also checks the one promise every run makes: exactly one
``reconcile_finished`` line, carrying the exit code the run returned.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lib.run import main
from tests.fakeapi import FakeApiServer

NS = "kube-system"


@dataclass
class Run:
    """What a run returned and logged."""

    code: int
    events: list[dict[str, Any]]
    seconds: float
    stderr: str = ""

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    @property
    def finished(self) -> dict[str, Any]:
        (line,) = self.named("reconcile_finished")
        return line


def run_main(argv: Sequence[str], environ: Mapping[str, str]) -> Run:
    """``main(argv, environ)`` with stdout and stderr captured; JSON lines parsed."""
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv), dict(environ))
    seconds = time.monotonic() - started
    events = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    result = Run(code, events, seconds, err.getvalue())
    assert result.finished["exit_code"] == code, out.getvalue()  # exactly one, and it tells the truth
    return result


def versions(fake: FakeApiServer, namespace: str = NS) -> dict[str, str]:
    """``kind/name`` -> resourceVersion of every object the reconciler writes."""
    objs = [
        *fake.objects("Service", namespace),
        *fake.objects("Endpoints", namespace),
        *fake.objects("EndpointSlice", namespace),
    ]
    return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in objs}
