"""The README's quick start is safe anywhere.

``make run`` must reach no cluster but its own demo, whatever ``KUBECONFIG``,
``~/.kube/config`` or the ``KUBELET_ENDPOINTS_*`` variables say: a recording
server stands in for "your real cluster" and must see no request. A control
run of the reconciler itself against the same kubeconfig shows the recorder
does record, so the first test can fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


class _Recorder(BaseHTTPRequestHandler):
    """Answers every request with an empty 200 and records it."""

    seen: ClassVar[list[str]] = []

    def _any(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    seen: ClassVar[list[str]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    """An environment whose KUBECONFIG and ~/.kube/config both name the recorder."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "prod", "cluster": {"server": url}}],
        "users": [{"name": "prod", "user": {"token": "t"}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod", "namespace": "x"}}],
        "current-context": "prod",
    }
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    for path in (tmp_path / "kubeconfig", home / ".kube" / "config"):
        path.write_text(json.dumps(config), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBELET_ENDPOINTS_", "MAKE"))}
    env.update(
        HOME=str(home),
        KUBECONFIG=str(tmp_path / "kubeconfig"),
        KUBELET_ENDPOINTS_CONTEXT="prod",
        KUBELET_ENDPOINTS_TIMEOUT="5",
    )
    return env


def test_make_run_never_reaches_the_cluster_in_kubeconfig(
    tmp_path: Path, recorder: tuple[str, list[str]]
) -> None:
    make = shutil.which("make")
    if make is None:
        if os.environ.get("CI") == "true":
            pytest.fail("make is missing")
        pytest.skip("make not installed: the quick start's make run is not checked")
    url, seen = recorder
    done = subprocess.run(
        [make, "--no-print-directory", "run", "ARGS=--context prod"],
        cwd=ROOT,
        env=_env(tmp_path, url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert seen == [], f"make run reached the KUBECONFIG cluster: {seen}"
    assert "reconcile_finished" in done.stdout and "exit code 0" in done.stdout
    # It ends with the two commands for a real cluster: the dry run first.
    tail = done.stdout.rsplit("For a real cluster", 1)[1]
    commands = re.findall(r"^\s+(\.venv/bin/python reconciler\.py.*)$", tail, re.MULTILINE)
    assert len(commands) == 2, tail
    assert "--dry-run" in commands[0] and "--dry-run" not in commands[1]


def test_the_recorder_sees_a_run_that_does_use_kubeconfig(
    tmp_path: Path, recorder: tuple[str, list[str]]
) -> None:
    # The control: the reconciler itself, with the same environment, does talk
    # to the recorder (its empty answers are not a node list: exit 4).
    url, seen = recorder
    done = subprocess.run(
        [sys.executable, "reconciler.py", "--timeout", "2"],
        cwd=ROOT,
        env=_env(tmp_path, url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4, done.stdout + done.stderr
    assert seen and seen[0].startswith("GET /api/v1/nodes"), seen


def test_the_quick_start_is_two_commands_and_shows_the_dry_run_before_the_real_run() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    first_block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block[1].splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    dry, real = section.find("reconciler.py --dry-run"), section.find("reconciler.py --log-format")
    assert 0 <= dry < real, "the quick start shows the dry run, then the real run"
