"""Shared pytest fixtures: a fake API server per test, a kubeconfig for it,
and the real kube-apiserver of the real-server tier (one per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakeapi import FakeApiServer
from tests.realserver import ASSETS_ENV, RealApiServer, assets_dir

REAL_SKIP = (
    f"real-server tier skipped: {ASSETS_ENV} names no directory with etcd and kube-apiserver"
    " (`setup-envtest use -p path 1.35` gives one: docs/development.md)"
)
#: The fixtures that reach the real server: a test using one must be marked ``real``.
REAL_FIXTURES = {"real", "real_server"}


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

    Opt-in, the envtest way: skipped with one line in the summary where
    ``KUBEBUILDER_ASSETS`` names no directory with the binaries, in CI as
    well (no package registry ships a kube-apiserver). Given the binaries,
    a server that fails to start fails.
    """
    assets = assets_dir()
    if assets is None:
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test that reaches the real server without the ``real`` marker.

    ``pytest -m real`` must select exactly the real-server tier, and
    ``-m "not real"`` everything else: a test that uses the fixtures but
    lacks the marker would slip between the two.
    """
    unmarked = [
        item.nodeid
        for item in items
        if REAL_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("real") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests using the real server without @pytest.mark.real: " + ", ".join(unmarked[:10])
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if REAL_SKIP in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} tests: {REAL_SKIP}", yellow=True)
