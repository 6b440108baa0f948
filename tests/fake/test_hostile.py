"""A hostile world: what an attacker or a confused operator tries.

Each test names the behaviour it pins. Runs go through the real
``lib.run.main`` and the real ``kubernetes`` client over HTTP: against the
fake API server, the hostile one in tests/fake/hostile.py, a subprocess where
memory is measured, and the real kube-apiserver where it counts. Signals are
in tests/fake/test_signals.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from lib import config, kube, log
from lib.exitcodes import ApiUnavailable, UsageError
from lib.run import main, node_items
from tests.fake.hostile import HostileServer
from tests.fakeapi import FakeApiServer, make_node
from tests.realserver import RealApiServer
from tests.runs import Run, run_main, versions

ROOT = Path(__file__).resolve().parents[2]
NODES = "/api/v1/nodes"
SECRET = "s3cr3t-Tok3n-0f-the-0perator"


def _published(fake: FakeApiServer, kubeconfig: str) -> dict[str, str]:
    fake.set_nodes([make_node("node-a", "10.0.0.1"), make_node("node-b", "10.0.0.2")])
    assert run_main(["--kubeconfig", kubeconfig, "--termination-log", ""], {}).code == 0
    fake.clear_log()
    return versions(fake)


def _everything(run: Run, *files: Path) -> str:
    """All a run let out: log lines, stderr and the given files."""
    return json.dumps(run.events) + run.stderr + "".join(f.read_text(encoding="utf-8") for f in files)


def _termination_log(tmp_path: Path) -> Path:
    path = tmp_path / "termination-log"
    path.touch()
    return path


# --- 1. secrets in kubeconfig errors ---------------------------------------------------

MISINDENTED = {
    # One level too shallow: the key lands beside "user", which is then null.
    "token": "users:\n- name: u\n  user:\n  token: {s}\n",
    "password": "users:\n- name: u\n  user:\n  username: admin\n  password: {s}\n",
    "client-key-data": "users:\n- name: u\n  user:\n  client-key-data: {s}\n",
    # One level too deep: a YAML error whose own message quotes the line.
    "token, too deep": "users:\n- name: u\n  user:\n    token: x\n      token2: {s}\n",
    # No space after the colon: the whole "token:..." becomes the user's value.
    "token without a space": "users:\n- name: u\n  user: token:{s}\n",
}


@pytest.mark.parametrize("case", MISINDENTED)
@pytest.mark.parametrize("level", ["info", "debug"])
def test_a_misindented_secret_is_never_printed(
    case: str, level: str, fake: FakeApiServer, tmp_path: Path
) -> None:
    body = (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: c\n  cluster:\n    server: {fake.url}\n"
        "contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
        + MISINDENTED[case].format(s=SECRET)
    )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(body, encoding="utf-8")
    term = _termination_log(tmp_path)

    for fmt in ("json", "console"):
        argv = ["--kubeconfig", str(kubeconfig), "--termination-log", str(term), "--log-level", level]
        run = run_main([*argv, "--log-format", fmt], {}) if fmt == "json" else _console(argv)
        assert run.code in (3, 5), run.events  # 5: the loader accepted it, the server did not
        assert SECRET not in _everything(run, term)
        if run.code == 3:
            assert str(kubeconfig) in term.read_text(encoding="utf-8")


def _console(argv: list[str]) -> Run:
    """A console-format run in a subprocess: its whole stdout and stderr, as text."""
    proc = subprocess.run(
        [sys.executable, "reconciler.py", *argv, "--log-format", "console"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"},
    )
    return Run(proc.returncode, [{"stdout": proc.stdout}], 0.0, proc.stderr)


def test_yaml_errors_name_the_line_not_its_text(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"users:\n- name: u\n  user: {{token: {SECRET}\n", encoding="utf-8")
    run = run_main(["--kubeconfig", str(kubeconfig), "--termination-log", ""], {})
    assert run.code == 3
    reason = run.finished["reason"]
    assert reason.startswith(f"cannot load {kubeconfig}: not valid YAML") and "line" in reason
    assert SECRET not in _everything(run)


# Names and paths are what an operator fixes: shown, while every credential stays hidden.
NAMED = {
    # case: (what is changed in a kubeconfig with a token and key data, what the reason names)
    "missing CA file": (
        lambda doc, tmp: doc["clusters"][0]["cluster"].update(
            {"server": "https://127.0.0.1:1", "certificate-authority": f"{tmp}/missing-ca.crt"}
        ),
        r"missing-ca\.crt",
    ),
    "missing client certificate": (
        lambda doc, tmp: (
            doc["clusters"][0]["cluster"].update({"server": "https://127.0.0.1:1"}),
            doc["users"][0]["user"].update(
                {"client-certificate": f"{tmp}/gone.crt", "client-key": f"{tmp}/gone.key"}
            ),
        ),
        r"gone\.(crt|key)",
    ),
    "--context with a typo": (lambda doc, tmp: None, r"no contexts entry named prod-typo"),
    "a context naming a missing user": (
        lambda doc, tmp: doc["contexts"][0]["context"].update({"user": "ghost-user"}),
        r"context prod names user ghost-user, which has no entry in users",
    ),
}


@pytest.mark.parametrize("case", NAMED)
def test_kubeconfig_errors_show_names_and_paths_never_credentials(
    case: str, fake: FakeApiServer, tmp_path: Path
) -> None:
    path = Path(fake.write_kubeconfig(tmp_path / "kubeconfig", context="prod", token=SECRET))
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["users"][0]["user"]["client-key-data"] = "a2V5LWRhdGEtc2VjcmV0LTEyMzQ1Ng=="
    change, named = NAMED[case]
    change(doc, tmp_path)
    path.write_text(json.dumps(doc), encoding="utf-8")
    flags = ["--context", "prod-typo"] if "typo" in case else []
    run = run_main(["--kubeconfig", str(path), "--termination-log", "", *flags], {})
    assert run.code == 3, run.events
    assert re.search(named, run.finished["reason"]), run.finished["reason"]
    assert "<redacted>" not in run.finished["reason"]
    text = _everything(run)
    assert SECRET not in text and "a2V5LWRhdGEtc2VjcmV0LTEyMzQ1Ng==" not in text
    assert fake.requests == []  # refused before any request: not sent to RBAC with exit 5


# --- 2. a token file ending in a newline -------------------------------------------------


def test_a_token_file_with_a_newline_is_trimmed(fake: FakeApiServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(fake.token + "\n", encoding="utf-8")  # what `echo` and `kubectl create token` write
    kubeconfig = tmp_path / "kubeconfig"
    fake.write_kubeconfig(kubeconfig)
    doc = json.loads(kubeconfig.read_text(encoding="utf-8"))
    doc["users"][0]["user"] = {"tokenFile": str(token_file)}
    kubeconfig.write_text(json.dumps(doc), encoding="utf-8")
    fake.set_nodes([make_node("node-a", "10.0.0.1")])

    run = run_main(["--kubeconfig", str(kubeconfig), "--termination-log", ""], {})
    assert run.code == 0, run.finished
    assert {r.headers["authorization"] for r in fake.requests} == {f"Bearer {fake.token}"}


@pytest.mark.parametrize(
    "token", [f"{SECRET}\nX-Injected: 1", f"{SECRET}\r\n", f"{SECRET}\x00", "ünïcode-tøken"]
)
def test_a_token_that_is_no_header_value_is_exit_3(token: str, fake: FakeApiServer, tmp_path: Path) -> None:
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", token=token)
    term = _termination_log(tmp_path)
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", str(term)], {})
    if token == f"{SECRET}\r\n":  # only surrounding whitespace: trimmed, then simply the wrong token
        assert run.code == 5
    else:
        assert run.code == 3, run.finished
        assert "not a valid HTTP header value" in run.finished["reason"]
        assert fake.requests == []
    assert SECRET not in _everything(run, term)


@pytest.mark.real
def test_the_real_server_accepts_a_trimmed_token(real: RealApiServer, tmp_path: Path) -> None:
    ns = real.new_namespace()
    real.create_nodes([make_node("node-a", "10.0.0.1")])
    kubeconfig = real.write_kubeconfig(tmp_path / "kubeconfig", token=real.admin_token + "\n")
    run = run_main(["--kubeconfig", kubeconfig, "--namespace", ns, "--termination-log", ""], {})
    assert run.code == 0, run.finished
    assert real.admin_token not in _everything(run)


@pytest.mark.real
def test_http_to_the_real_servers_tls_port_is_a_configuration_error(
    real: RealApiServer, tmp_path: Path
) -> None:
    kubeconfig = Path(real.write_kubeconfig(tmp_path / "kubeconfig"))
    text = kubeconfig.read_text(encoding="utf-8")
    assert real.url.startswith("https://") and real.url in text
    kubeconfig.write_text(
        text.replace(real.url, real.url.replace("https://", "http://", 1)), encoding="utf-8"
    )
    run = run_main(["--kubeconfig", str(kubeconfig), "--termination-log", "", "--timeout", "5"], {})
    assert run.code == 3, run.finished
    assert "speaks TLS" in run.finished["reason"] and run.finished["requests"] == 1
    assert real.admin_token not in _everything(run)


# --- 3. a failing exec credential plugin ---------------------------------------------------


def _exec_kubeconfig(fake: FakeApiServer, tmp_path: Path, script: str) -> str:
    plugin = tmp_path / "get-credential"
    plugin.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    plugin.chmod(0o755)
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    doc = json.loads(Path(kubeconfig).read_text(encoding="utf-8"))
    doc["users"][0]["user"] = {
        "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin), "args": ["--x"]}
    }
    Path(kubeconfig).write_text(json.dumps(doc), encoding="utf-8")
    return kubeconfig


@pytest.mark.parametrize(
    ("script", "kind"),
    [
        (f"echo 'refresh token {SECRET} expired' >&2\nexit 1\n", "exited with status 1"),
        (f"echo 'not json {SECRET}'\n", "returned no usable credential"),
        (
            'echo \'{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",'
            f' "status": {{"secret": "{SECRET}"}}}}\'\n',
            "returned no usable credential",
        ),
    ],
)
def test_a_failing_exec_plugin_is_exit_3_naming_it(
    script: str, kind: str, fake: FakeApiServer, tmp_path: Path
) -> None:
    kubeconfig = _exec_kubeconfig(fake, tmp_path, script)
    term = _termination_log(tmp_path)
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", str(term)], {})
    assert run.code == 3, run.finished
    reason = run.finished["reason"]
    assert "exec credential plugin 'get-credential'" in reason and kind in reason
    assert SECRET not in _everything(run, term)
    assert fake.requests == []


def test_a_working_exec_plugin_still_works(fake: FakeApiServer, tmp_path: Path) -> None:
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": fake.token + "\n"},
    }
    kubeconfig = _exec_kubeconfig(fake, tmp_path, f"cat <<'EOF'\n{json.dumps(credential)}\nEOF\n")
    fake.set_nodes([make_node("node-a", "10.0.0.1")])
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", ""], {})
    assert run.code == 0, run.finished
    assert fake.token not in _everything(run)


# --- 4. a 3xx, a 204 or {} is no success ----------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 302},
        {"status": 307},
        {"status": 204},
        {"body": b"{}"},
        {"body": b'{"kind": "Status", "status": "Success"}'},
    ],
    ids=["302", "307", "204", "{}", "Status"],
)
@pytest.mark.parametrize("allow_empty", [False, True])
def test_a_node_list_without_a_list_is_exit_4(
    fault: dict[str, Any], allow_empty: bool, fake: FakeApiServer, kubeconfig: str
) -> None:
    published = _published(fake, kubeconfig)
    fake.inject("GET", NODES, times=-1, **fault)
    flags = ["--allow-empty"] if allow_empty else []
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", "", "--timeout", "1.5", *flags], {})
    assert run.code == 4, run.finished
    assert run.finished["writes"] == 0 and versions(fake) == published
    assert [r.method for r in fake.requests] == ["GET"] * len(fake.requests)  # retried, never written


@pytest.mark.parametrize(
    "fault", [{"status": 301}, {"status": 204}, {"body": b"{}"}], ids=["301", "204", "{}"]
)
def test_a_write_answered_without_the_object_is_not_applied(
    fault: dict[str, Any], fake: FakeApiServer, kubeconfig: str
) -> None:
    fake.set_nodes([make_node("node-a", "10.0.0.1")])
    fake.inject("PATCH", ".*", times=-1, **fault)
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", "", "--timeout", "1.5"], {})
    assert run.code == 4, run.finished
    assert run.finished["outcome"] == "failed" and run.finished["writes"] == 0
    assert run.named("object_applied") == []


# --- 5. memory bounded whatever the server sends ---------------------------------------------


def _peak_rss_mib(argv: list[str], timeout: float = 120) -> tuple[int, float, list[dict[str, Any]]]:
    """Run reconciler.py in a subprocess: (exit code, peak RSS in MiB, log lines)."""
    proc = subprocess.Popen(
        [sys.executable, "reconciler.py", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"},
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    return proc.returncode, usage.ru_maxrss / 1024, lines


# A bare run (imports, client, one small list) peaks near 60 MiB; every attack
# below ended far above (README "Hostile world": 1-4 GB) before the caps.
RSS_BOUND_MIB = 200


@pytest.mark.parametrize(
    ("mode", "size", "reason"),
    [
        ("gzip_bomb", 1 << 30, "larger than 64 MiB"),
        ("huge", 1 << 30, "larger than 64 MiB"),
        ("repeat_continue", 0, "repeated a continue token"),
        # Just under the 64 MiB cap: json.loads made 1.7 GB of the first one.
        # The typed node decoder stops at the first item without a name...
        ("dense", (64 << 20) - 1024, "item 0: no metadata"),
        # ...and builds only the declared fields of the smallest valid items.
        ("dense_valid", (64 << 20) - 1024, "more than 500 items on a page of 500"),
        # The slice list is paged and typed by item the same way (it was 4 GB
        # with each item split into members, 1.7 GB with json.loads).
        ("dense_slices", (64 << 20) - 1024, "more than 100 items on a page of 100"),
    ],
)
def test_hostile_responses_keep_memory_bounded(mode: str, size: int, reason: str, tmp_path: Path) -> None:
    with HostileServer(mode, size) as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        started = time.monotonic()
        code, peak, lines = _peak_rss_mib(
            ["--kubeconfig", kubeconfig, "--termination-log", "", "--timeout", "40"]
        )
        seconds = time.monotonic() - started
    finished = [x for x in lines if x["event"] == "reconcile_finished"]
    assert code == 4 and len(finished) == 1, lines
    assert reason in finished[0]["reason"]
    assert peak < RSS_BOUND_MIB, peak
    assert seconds < 20  # at once, not at the deadline


def test_a_billion_laughs_kubeconfig_is_refused(tmp_path: Path) -> None:
    lines = ["apiVersion: v1", "kind: Config", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    lines += ["users:", "- name: u", "  user: *a9", "current-context: x"]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, peak, out = _peak_rss_mib(["--kubeconfig", str(kubeconfig), "--termination-log", ""])
    assert code == 3, out
    assert "YAML aliases" in out[-1]["reason"]
    assert peak < RSS_BOUND_MIB, peak


def test_an_oversized_kubeconfig_is_refused_unread(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("# " + "x" * (2 << 20) + "\n", encoding="utf-8")
    run = run_main(["--kubeconfig", str(kubeconfig), "--termination-log", ""], {})
    assert run.code == 3 and "larger than 1048576 bytes" in run.finished["reason"]
    run = run_main(["--kubeconfig", "/dev/zero", "--termination-log", ""], {})
    assert run.code == 3 and "larger than" in run.finished["reason"]


def test_more_items_than_the_page_limit_is_refused(fake: FakeApiServer, kubeconfig: str) -> None:
    items = [make_node(f"n{i}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(3)]
    body = json.dumps({"kind": "NodeList", "metadata": {}, "items": items}).encode()
    fake.inject("GET", NODES, body=body, times=-1)
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", ""], {})
    assert run.code == 0  # 3 items on a page of 500: fine
    api = kube.Api(kube.load_client(kubeconfig, None, {}), kube.Deadline(5), log.get())
    with pytest.raises(ApiUnavailable, match="more than 2 items on a page of 2"):
        api.list_nodes("", node_items("internal"), 2)


# --- 7 and 9. the termination log -------------------------------------------------------------


def test_the_termination_log_never_follows_a_symlink(fake: FakeApiServer, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me\n", encoding="utf-8")
    link = tmp_path / "termination-log"
    link.symlink_to(target)
    run = run_main(["--kubeconfig", "/nonexistent", "--termination-log", str(link)], {})
    assert run.code == 3
    assert target.read_text(encoding="utf-8") == "keep me\n"


def test_read_only_files_fifos_and_directories_are_left_alone(tmp_path: Path) -> None:
    read_only = tmp_path / "read-only"
    read_only.write_text("keep me\n", encoding="utf-8")
    read_only.chmod(0o444)  # root could still write it: the mode bits decide
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (read_only, fifo, tmp_path):
        run = run_main(["--kubeconfig", "/nonexistent", "--termination-log", str(path)], {})
        assert run.code == 3
    assert read_only.read_text(encoding="utf-8") == "keep me\n"
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_usage_error_writes_to_the_given_termination_log(tmp_path: Path) -> None:
    term = _termination_log(tmp_path)
    run = run_main(["--bogus", "--termination-log", str(term)], {})
    assert run.code == 2
    assert term.read_text(encoding="utf-8").startswith("exit 2: unrecognized arguments: --bogus")

    env = {"KUBELET_ENDPOINTS_TERMINATION_LOG": str(term)}
    term.write_text("", encoding="utf-8")
    assert run_main(["--timeout", "soon"], env).code == 2
    assert term.read_text(encoding="utf-8").startswith("exit 2: --timeout")

    term.write_text("", encoding="utf-8")
    assert run_main(["--timeout", "soon", "--termination-log", ""], env).code == 2  # the flag wins: off
    assert term.read_text(encoding="utf-8") == ""


# --- 8 and 12. values validated whole ---------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        ([], {"KUBELET_ENDPOINTS_NAMESPACE": "kube-system\n"}),
        (["--service-name", "kubelet\n"], {}),
        (["--field-manager", "mgr\n"], {}),
        (["--timeout", "\uff15"], {}),  # fullwidth five
        (["--timeout", "\u0665"], {}),  # Arabic-Indic five
        (["--max-endpoints-per-slice", "\uff1100"], {}),
        (["--timeout", " 5"], {}),
        (["--node-selector", "role=\udcff"], {}),  # a non-UTF-8 byte, as Python decodes argv
        ([], {"KUBELET_ENDPOINTS_NODE_SELECTOR": "a=\udcfe"}),
    ],
)
def test_bad_values_are_usage_errors_before_any_request(
    argv: list[str], environ: dict[str, str], fake: FakeApiServer, kubeconfig: str
) -> None:
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", "", *argv], environ)
    assert run.code == 2, run.finished
    assert fake.requests == []


def test_a_non_utf8_argument_from_the_command_line_is_exit_2(fake: FakeApiServer, kubeconfig: str) -> None:
    # The real thing: bytes on the command line of a real process.
    proc = subprocess.run(
        [sys.executable, "reconciler.py", "--kubeconfig", kubeconfig, "--node-selector", b"role=\xff"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "KUBELET_ENDPOINTS_TERMINATION_LOG": ""},
    )
    assert proc.returncode == 2, proc.stdout
    assert b"Traceback" not in proc.stderr and b"not valid UTF-8" in proc.stderr
    assert fake.requests == []


def test_a_misspelt_variable_is_a_warning(fake: FakeApiServer, kubeconfig: str) -> None:
    fake.set_nodes([make_node("node-a", "10.0.0.1")])
    env = {
        "KUBELET_ENDPOINTS_DRYRUN": "true",
        "KUBELET_ENDPOINTS_KUBECONFIG": "x",
        "KUBELET_ENDPOINTS_TIMEOUT": "9",
    }
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", ""], env)
    assert run.code == 0
    assert [e["name"] for e in run.named("unknown_environment_variable")] == [
        "KUBELET_ENDPOINTS_DRYRUN",
        "KUBELET_ENDPOINTS_KUBECONFIG",
    ]


def test_no_flags_undo_their_variables() -> None:
    env = {"KUBELET_ENDPOINTS_DRY_RUN": "true", "KUBELET_ENDPOINTS_ALLOW_EMPTY": "1"}
    assert config.parse([], env).dry_run is True
    cfg = config.parse(["--no-dry-run", "--no-allow-empty", "--no-http-metrics"], env)
    assert (cfg.dry_run, cfg.allow_empty, cfg.http_metrics) == (False, False, False)
    assert config.parse(["--no-dry-run", "--dry-run"], {}).dry_run is True  # the last one wins
    with pytest.raises(UsageError):
        config.parse(["--no-timeout"], {})


def test_two_nodes_with_one_name_are_not_published(fake: FakeApiServer, kubeconfig: str) -> None:
    published = _published(fake, kubeconfig)
    twins = [make_node("node-a", "10.0.0.1"), make_node("node-a", "10.0.0.9")]
    body = json.dumps({"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": twins}).encode()
    fake.inject("GET", NODES, body=body, times=-1)
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", ""], {})
    assert run.code == 4 and "node 'node-a' listed twice" in run.finished["reason"]
    assert versions(fake) == published


# --- 10. no local variables in console tracebacks ----------------------------------------------


def test_console_tracebacks_are_plain(
    fake: FakeApiServer, kubeconfig: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An internal error while a response is read: the frames above hold the
    # request's headers, Authorization among them, in their locals. Neither
    # format may show them.
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(kube.transport, "_read_bounded", broken)
    for fmt in ("json", "console"):
        argv = ["--kubeconfig", kubeconfig, "--termination-log", "", "--log-format", fmt]
        if fmt == "json":
            run = run_main(argv, {})
            text = json.dumps(run.events)
        else:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert main(argv, {}) == 1
            text = out.getvalue()
        assert "RuntimeError: boom" in text or "boom" in text
        assert fake.token not in text
    # Whatever structlog would pick by default (rich's, with locals, when rich
    # is installed), the console renderer is given the plain formatter.
    log.configure("console")
    handler = next(h for h in logging.getLogger().handlers if h.get_name() == log._HANDLER_NAME)
    renderer = handler.formatter.processors[-1]  # type: ignore[union-attr]
    assert isinstance(renderer, structlog.dev.ConsoleRenderer)
    assert renderer._exception_formatter is structlog.dev.plain_traceback


# --- 11. bounded log volume ----------------------------------------------------------------------


def test_thousands_of_garbage_addresses_log_twenty_lines_and_a_total(
    fake: FakeApiServer, kubeconfig: str
) -> None:
    node = make_node("node-a", "10.0.0.1")
    node["status"]["addresses"] = [
        {"type": "InternalIP", "address": "x" * 1000 + str(i)} for i in range(5000)
    ]
    fake.set_nodes([node, *(make_node(f"node-{i}", f"127.0.0.{i + 1}") for i in range(30))])
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", ""], {})
    skipped = run.named("node_skipped")
    assert len(skipped) == log.WARNINGS_PER_KIND
    assert all(len(e["address"] or "") <= log.MAX_VALUE for e in skipped)
    (total,) = run.named("warnings_suppressed")
    # 5000 non-IPs and then no address left on node-a; loopback and no address on each other node.
    assert total["totals"] == {"node_skipped": 5000 + 1 + 30 * 2}
    assert len(json.dumps(run.events)) < 20_000  # 5 MB of addresses before


def test_a_huge_status_message_is_cut(fake: FakeApiServer, kubeconfig: str, tmp_path: Path) -> None:
    fake.set_nodes([make_node("node-a", "10.0.0.1")])
    status = {"kind": "Status", "code": 422, "reason": "Invalid", "message": "m" * (1 << 20)}
    fake.inject("PATCH", ".*", status=422, body=json.dumps(status).encode(), times=-1)
    term = _termination_log(tmp_path)
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", str(term)], {})
    assert run.code == 6
    assert len(run.finished["reason"]) <= log.MAX_REASON
    assert max(len(json.dumps(e)) for e in run.events) < 4000
    assert len(term.read_bytes()) < 600


@pytest.mark.real
def test_insecure_skip_tls_verify_warns_once_in_the_log(real: RealApiServer, tmp_path: Path) -> None:
    ns = real.new_namespace()
    real.create_nodes([make_node("node-a", "10.0.0.1")])
    kubeconfig = Path(real.write_kubeconfig(tmp_path / "kubeconfig"))
    doc = json.loads(kubeconfig.read_text(encoding="utf-8"))
    cluster = doc["clusters"][0]["cluster"]
    del cluster["certificate-authority"]
    cluster["insecure-skip-tls-verify"] = True
    kubeconfig.write_text(json.dumps(doc), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "reconciler.py", "--kubeconfig", str(kubeconfig), "--namespace", ns],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "KUBELET_ENDPOINTS_TERMINATION_LOG": ""},
    )
    assert proc.returncode == 0, proc.stdout
    assert proc.stderr == ""
    events = [json.loads(line) for line in proc.stdout.splitlines()]  # every line is JSON
    warned = [e for e in events if e["event"] == "library_warning"]
    assert len(warned) == 1 and warned[0]["category"] == "InsecureRequestWarning"
    assert events[-1]["event"] == "reconcile_finished" and events[-1]["requests"] > 1


def test_a_delete_answered_with_an_empty_object_is_not_counted(fake: FakeApiServer, kubeconfig: str) -> None:
    # Found by the fault soak: "{}" to a slice DELETE counted as deleted
    # while the slice stayed (and published a removed node's IP).
    args = ["--kubeconfig", kubeconfig, "--termination-log", "", "--max-endpoints-per-slice", "1"]
    fake.set_nodes([make_node("node-a", "10.0.0.1"), make_node("node-b", "10.0.0.2")])
    assert run_main(args, {}).code == 0
    fake.set_nodes([make_node("node-a", "10.0.0.1")])
    fake.inject("DELETE", ".*", body=b"{}", times=-1)
    run = run_main([*args, "--timeout", "1.5"], {})
    assert run.code == 4, run.finished
    assert "neither the deleted object nor a Success Status" in run.finished["reason"]
    assert run.named("endpointslice_deleted") == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # Both lists are typed by item: the nesting hides in a field the decoder skips.
        (NODES, b'{"items":[{"metadata":{"name":"a"},"status":{},"x":' + b"[" * 100_000),
        (
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
            b'{"items":[{"metadata":{"name":"a"},"x":' + b"[" * 100_000,
        ),
    ],
    ids=["node-list", "slice-list"],
)
def test_json_nested_too_deep_is_exit_4_not_a_bug(
    path: str, body: bytes, fake: FakeApiServer, kubeconfig: str
) -> None:
    fake.set_nodes([make_node("node-a", "10.0.0.1")])
    fake.inject("GET", path, body=body, times=-1)
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", "", "--timeout", "1.5"], {})
    assert run.code == 4, run.finished
    assert "nests too deep" in run.finished["reason"]
    assert run.named("internal_error") == []


def test_a_member_larger_than_any_api_object_is_refused_unbuilt(fake: FakeApiServer, kubeconfig: str) -> None:
    # List items keep their members as raw JSON, decoded when read;
    # a slice whose endpoints are 4 MiB of "{}," (a million dicts if decoded)
    # cannot have been stored by a real server (3 MiB request limit).
    fake.set_nodes([make_node("node-a", "10.0.0.1")])
    endpoints = b"[" + b"{}," * ((4 << 20) // 3) + b"{}]"
    body = b'{"items":[{"metadata":{"name":"kubelet-ipv4-0"},"endpoints":' + endpoints + b"}]}"
    fake.inject("GET", "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices", body=body, times=-1)
    run = run_main(["--kubeconfig", kubeconfig, "--termination-log", "", "--timeout", "5"], {})
    assert run.code == 4, run.finished
    assert re.search(r"'endpoints' of 41943\d\d bytes: larger than any API object", run.finished["reason"])
    assert run.finished["writes"] == 0
