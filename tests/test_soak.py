"""The fault soak (bench/soak.py) in its bounded CI mode, and the regressions it found.

Each regression test is the smallest reproduction of a failure the soak
reported, through the real client over real HTTP against the fake API server.
"""

from __future__ import annotations

import contextlib
import io
import json
import time

import pytest

from lib.run import main
from tests.fakeapi import FakeApiServer, make_node


def _run(kubeconfig: str, *flags: str) -> tuple[int, list[dict[str, object]]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--kubeconfig", kubeconfig, "--termination-log", "", *flags], {})
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


# --- regressions found by the soak -------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["0", "0.01"])
def test_a_zero_retry_after_is_no_retry_storm(fake: FakeApiServer, kubeconfig: str, retry_after: str) -> None:
    # Soak seed 1: an API server (or a proxy in front of it) answering 429 with
    # "Retry-After: 0" until the deadline got ~750 requests in 2.5 s from one
    # run: the header was taken as the whole wait. It is a floor: our own
    # backoff still applies, as without the header.
    fake.set_nodes([make_node("node-a", "10.0.0.1")])
    fake.inject("GET", "/api/v1/nodes", status=429, retry_after=retry_after, times=-1)
    started = time.monotonic()
    code, events = _run(kubeconfig, "--timeout", "2")
    assert code == 4
    assert time.monotonic() - started < 3
    assert len(fake.requests) <= 8, f"{len(fake.requests)} requests in one 2 s run"
    retries = [e for e in events if e["event"] == "api_retry"]
    assert retries and all(float(str(e["sleep_s"])) >= 0.1 for e in retries)
    assert not [r for r in fake.requests if r.method in ("PATCH", "DELETE")]


def test_a_long_retry_after_is_still_honoured(fake: FakeApiServer, kubeconfig: str) -> None:
    # The floor must not shorten the server's own wait.
    fake.set_nodes([make_node("node-a", "10.0.0.1")])
    fake.inject("GET", "/api/v1/nodes", status=429, retry_after="1", times=1)
    started = time.monotonic()
    code, _ = _run(kubeconfig, "--timeout", "5")
    assert code == 0
    first, second = fake.requests[0], fake.requests[1]
    assert (first.status, second.status) == (429, 200)
    assert time.monotonic() - started >= 1.0
