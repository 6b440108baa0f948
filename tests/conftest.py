"""Shared pytest fixtures: a fake API server per test, a kubeconfig for it,
and the real kube-apiserver of the real-server tier (one per session)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakeapi import FakeApiServer
from tests.realserver import ASSETS_ENV, RealApiServer, assets_dir

REAL_SKIP = (
    f"real-server tier skipped: {ASSETS_ENV} names no directory with etcd and kube-apiserver"
    " (.ci/run unpacks them from ../shared/k8s; elsewhere use setup-envtest)"
)


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    """A started :class:`FakeApiServer`, stopped after the test."""
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def kubeconfig(fake: FakeApiServer, tmp_path: Path) -> str:
    """The path of a kubeconfig (context "fake") for the ``fake`` server."""
    return fake.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture(scope="session")
def real_server() -> Iterator[RealApiServer]:
    """etcd + kube-apiserver on 127.0.0.1, started once per session, stopped by PID.

    Skipped with one line in the summary where the binaries are missing; in
    CI (``CI=true``) a missing binary or a server that fails to start fails.
    """
    assets = assets_dir()
    if assets is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {REAL_SKIP}", pytrace=False)
        pytest.skip(REAL_SKIP)
    server = RealApiServer(assets).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def real(real_server: RealApiServer) -> RealApiServer:
    """The session's real server with no Node left by an earlier test (Nodes are cluster-wide)."""
    real_server.delete_all_nodes()
    return real_server


def pytest_terminal_summary(terminalreporter: Any) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if REAL_SKIP in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} tests: {REAL_SKIP}", yellow=True)
