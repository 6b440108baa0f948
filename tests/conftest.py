"""Shared pytest fixtures: a fake API server per test and a kubeconfig for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakeapi import FakeApiServer


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    """A started :class:`FakeApiServer`, stopped after the test."""
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def kubeconfig(fake: FakeApiServer, tmp_path: Path) -> str:
    """The path of a kubeconfig (context "fake") for the ``fake`` server."""
    return fake.write_kubeconfig(tmp_path / "kubeconfig")
