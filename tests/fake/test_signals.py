"""SIGTERM and SIGINT end a run cleanly, PID 1 included.

A deleted pod or a Job deadline sends SIGTERM; Ctrl-C sends SIGINT. The run
must stop before its next request, log its one ``reconcile_finished``
(``reason: interrupted by SIG...``), write the termination message, remove
the decoded client keys the client left in ``$TMPDIR`` and exit 128+N. Real
processes and real signals: ``reconciler.py`` in a subprocess, blocked on a
server that never answers; as PID 1 in its own PID namespace
(``unshare --pid --fork``, root only), where the kernel drops any signal
that has no handler.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fake.hostile import HostileServer
from tests.fakeapi import FakeApiServer, make_node
from tests.runs import run_main

ROOT = Path(__file__).resolve().parents[2]


def _start(argv: list[str], tmp_path: Path, prefix: list[str] | None = None) -> subprocess.Popen[str]:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    return subprocess.Popen(
        [*(prefix or []), sys.executable, "reconciler.py", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", "TMPDIR": str(tmpdir)},
    )


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]  # every line is one JSON object


def _interrupted(proc: subprocess.Popen[str], target: int, signum: int, server: HostileServer) -> None:
    assert server.arrived.wait(30), "the run never reached the server"
    time.sleep(0.2)  # inside the request now: blocked on the answer
    os.kill(target, signum)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        # The signal did nothing (PID 1 without a handler): end it for good.
        os.kill(target, signal.SIGKILL)
        proc.kill()
        proc.communicate()
        raise


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_request_ends_the_run_with_its_line(signum: int, code: int, tmp_path: Path) -> None:
    term = tmp_path / "termination-log"
    term.touch()
    with HostileServer("hang") as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        proc = _start(["--kubeconfig", kubeconfig, "--termination-log", str(term)], tmp_path)
        _interrupted(proc, proc.pid, signum, server)
        out, err = proc.communicate()
    name = signal.Signals(signum).name
    assert proc.returncode == code
    finished = _lines(out)[-1]
    assert finished["event"] == "reconcile_finished"
    assert (finished["outcome"], finished["exit_code"], finished["reason"]) == (
        "failed",
        code,
        f"interrupted by {name}",
    )
    assert err == ""  # no KeyboardInterrupt traceback
    assert term.read_text(encoding="utf-8") == f"exit {code}: interrupted by {name}\n"


def _client_cert(tmp_path: Path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but openssl is missing")
        pytest.skip("openssl not found: the decoded-key test is skipped")
    args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "c.pem"]
    subprocess.run(
        ["openssl", *args, "-subj", "/CN=client", "-days", "1"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    import base64

    def b64(name: str) -> str:
        return base64.b64encode((tmp_path / name).read_bytes()).decode()

    return b64("c.pem"), b64("k.pem")


def test_sigterm_removes_the_decoded_client_key(tmp_path: Path) -> None:
    cert, key = _client_cert(tmp_path)
    with HostileServer("hang") as server:
        # https: the client decodes the key to a file and loads it, then
        # waits for a TLS handshake that never comes.
        kubeconfig = server.write_kubeconfig(
            tmp_path / "kubeconfig",
            server=f"https://127.0.0.1:{server.port}",
            **{"client-certificate-data": cert, "client-key-data": key},
        )
        doc = json.loads(Path(kubeconfig).read_text(encoding="utf-8"))
        doc["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = True
        Path(kubeconfig).write_text(json.dumps(doc), encoding="utf-8")
        proc = _start(["--kubeconfig", kubeconfig, "--termination-log", ""], tmp_path)
        assert server.arrived.wait(30)
        time.sleep(0.2)
        tmpdir = tmp_path / "tmpdir"
        held = sorted(p.read_text() for p in tmpdir.iterdir())
        assert any("PRIVATE KEY" in text for text in held)  # the key is on disk while the run lasts
        try:
            os.kill(proc.pid, signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 143, out + err
    assert list(tmpdir.iterdir()) == []
    assert _lines(out)[-1]["reason"] == "interrupted by SIGTERM"


def test_as_pid_1_sigterm_is_handled(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but the PID 1 test needs root and unshare")
        pytest.skip("PID 1 test skipped: needs root and unshare (util-linux)")
    term = tmp_path / "termination-log"
    term.touch()
    with HostileServer("hang") as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        argv = ["--kubeconfig", kubeconfig, "--termination-log", str(term)]
        proc = _start(argv, tmp_path, prefix=[unshare, "--pid", "--fork", "--mount-proc"])
        assert server.arrived.wait(30), proc.stderr
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        (child,) = children
        status = Path(f"/proc/{child}/status").read_text()
        ns_pid = next(line for line in status.splitlines() if line.startswith("NSpid:")).split()
        assert ns_pid[-1] == "1"  # PID 1 in its own namespace, as in a container
        _interrupted(proc, int(child), signal.SIGTERM, server)
        out, err = proc.communicate()
    assert proc.returncode == 143, err
    assert _lines(out)[-1]["reason"] == "interrupted by SIGTERM"
    assert term.read_text(encoding="utf-8") == "exit 143: interrupted by SIGTERM\n"


def test_no_request_follows_a_signal(fake: FakeApiServer, kubeconfig: str) -> None:
    # In-process, with real signals: SIGTERM arrives while the first write
    # is in flight; the run makes no request after it.
    fake.set_nodes([make_node("node-a", "10.0.0.1"), make_node("node-b", "10.0.0.2")])

    def on_request(request: Any) -> None:
        if request.method == "PATCH" and not signalled:
            signalled.append(len(fake.requests))
            os.kill(os.getpid(), signal.SIGTERM)

    signalled: list[int] = []
    fake.on_request = on_request
    previous = signal.getsignal(signal.SIGTERM)
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", ""], {})
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored after the run
    assert run.code == 143
    assert run.finished["reason"] == "interrupted by SIGTERM"
    assert signalled and len(fake.requests) == signalled[0]


def test_sigterm_ends_a_hung_exec_plugin_at_once(tmp_path: Path) -> None:
    started = tmp_path / "plugin-started"
    plugin = tmp_path / "get-credential"
    plugin.write_text(f"#!/bin/sh\ntouch {started}\nexec sleep 8\n", encoding="utf-8")
    plugin.chmod(0o755)
    with HostileServer("hang") as server:
        kubeconfig = server.write_kubeconfig(
            tmp_path / "kubeconfig",
            exec={"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)},
        )
        proc = _start(["--kubeconfig", kubeconfig, "--termination-log", ""], tmp_path)
        try:
            deadline = time.monotonic() + 30
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert started.exists(), "the plugin never ran"
            sent = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 143, out + err
    assert time.monotonic() - sent < 5  # not the plugin's 8 s, nor the run's deadline
    assert _lines(out)[-1]["reason"] == "interrupted by SIGTERM"
