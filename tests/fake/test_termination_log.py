"""The termination message: a failed run leaves "exit N: reason" where the kubelet reads it.

Through the real run (``lib.run.main``) against the fake API server: each
failure class writes its code and the run's one-line reason to
``--termination-log``; a success writes nothing; a path that does not exist is
never created (a run by hand must not leave a /dev/termination-log behind).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lib.run import main
from tests.fakeapi import FakeApiServer, make_node
from tests.runs import run_main

NS, SVC = "kube-system", "kubelet"


def _published_endpoints(fake: FakeApiServer) -> None:
    fake.apply_as(
        "kubelet-endpoints-reconciler",
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": SVC, "namespace": NS},
            "subsets": [
                {"addresses": [{"ip": "10.0.0.1"}], "ports": [{"name": "https-metrics", "port": 10250}]}
            ],
        },
    )


def _forbid_nodes(fake: FakeApiServer) -> None:
    fake.forbid("GET", "/api/v1/nodes")


def _nodes_unavailable(fake: FakeApiServer) -> None:
    fake.inject("GET", "/api/v1/nodes", status=503, times=-1)


def _writes_rejected(fake: FakeApiServer) -> None:
    fake.inject("PATCH", ".*", status=422, times=-1)


def _all_nodes_not_ready(fake: FakeApiServer) -> None:
    fake.set_nodes([make_node("node-a", "10.0.0.1", ready="False")])
    _published_endpoints(fake)


FAILURES: dict[str, tuple[int, Callable[[FakeApiServer], None], list[str]]] = {
    "config": (3, lambda fake: None, ["--kubeconfig", "/nonexistent/kubeconfig"]),
    "api-unavailable": (4, _nodes_unavailable, ["--timeout", "0.6"]),
    "forbidden": (5, _forbid_nodes, []),
    "write-rejected": (6, _writes_rejected, []),
    "safety-guard": (7, _all_nodes_not_ready, []),
}


@pytest.mark.parametrize("case", FAILURES)
def test_a_failed_run_writes_its_exit_code_and_reason(
    case: str, fake: FakeApiServer, kubeconfig: str, tmp_path: Path
) -> None:
    code, arrange, extra = FAILURES[case]
    fake.set_nodes([make_node("node-a", "10.0.0.1"), make_node("node-b", "10.0.0.2")])
    arrange(fake)
    log = tmp_path / "termination-log"
    log.touch()  # the kubelet creates the file before the container starts

    result = run_main(["--kubeconfig", kubeconfig, "--termination-log", str(log), *extra], {})
    assert result.code == code

    finished = result.finished
    message = log.read_text(encoding="utf-8")
    assert message == f"exit {code}: {finished['reason']}\n"
    assert message.count("\n") == 1  # one line: `kubectl describe pod` shows it whole
    assert len(message.encode()) <= 4096  # the kubelet keeps no more


def test_a_successful_run_writes_nothing(fake: FakeApiServer, kubeconfig: str, tmp_path: Path) -> None:
    fake.set_nodes([make_node("node-a", "10.0.0.1")])
    log = tmp_path / "termination-log"
    log.touch()

    assert main(["--kubeconfig", kubeconfig, "--termination-log", str(log)], {}) == 0
    assert log.read_text(encoding="utf-8") == ""


def test_a_missing_termination_log_is_not_created(
    fake: FakeApiServer, kubeconfig: str, tmp_path: Path
) -> None:
    _forbid_nodes(fake)
    log = tmp_path / "termination-log"

    assert main(["--kubeconfig", kubeconfig, "--termination-log", str(log)], {}) == 5
    assert not log.exists()


def test_the_environment_variable_sets_the_path(fake: FakeApiServer, kubeconfig: str, tmp_path: Path) -> None:
    _forbid_nodes(fake)
    log = tmp_path / "termination-log"
    log.touch()

    env = {"KUBELET_ENDPOINTS_TERMINATION_LOG": str(log)}
    assert main(["--kubeconfig", kubeconfig], env) == 5
    assert log.read_text(encoding="utf-8").startswith("exit 5: GET /api/v1/nodes: 403 Forbidden")


def test_an_empty_path_turns_it_off(fake: FakeApiServer, kubeconfig: str, tmp_path: Path) -> None:
    _forbid_nodes(fake)
    log = tmp_path / "termination-log"
    log.touch()

    env = {"KUBELET_ENDPOINTS_TERMINATION_LOG": str(log)}
    assert main(["--kubeconfig", kubeconfig, "--termination-log", ""], env) == 5  # the flag wins
    assert log.read_text(encoding="utf-8") == ""
