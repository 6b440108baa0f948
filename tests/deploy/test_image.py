"""The image's runtime environment, built the way the Dockerfile builds it, runs (no Docker engine here).

Same Python minor version as the Dockerfile's base image, a venv from
requirements.txt only, byte-compiled with unchecked-hash, a copy of
reconciler.py and lib/ made read-only; then ``--help`` and one reconcile
against the fake API server, as uid 65534 where the test runs as root, with
no .pyc written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakeapi import FakeApiServer, make_node

ROOT = Path(__file__).resolve().parents[2]


def _base_minor() -> str:
    match = re.search(r"^FROM python:(\d+\.\d+)\.\d+-", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile names a pinned python base image"
    return match[1]


@pytest.fixture(scope="module")
def image_tree() -> Iterator[Path]:
    minor = _base_minor()
    python = shutil.which(f"python{minor}")
    if python is None:
        message = f"python{minor} (the image's Python) not found: the image's runtime is not checked"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # Outside pytest's temporary folders, which only root may enter.
    tree = Path(tempfile.mkdtemp(prefix="ker-image-"))
    tree.chmod(0o755)
    venv, app = tree / "venv", tree / "app"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-compile", "-r", str(ROOT / "requirements.txt")],
        check=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    app.mkdir()
    shutil.copy2(ROOT / "reconciler.py", app / "reconciler.py")
    shutil.copytree(ROOT / "lib", app / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "compileall",
            "-q",
            "--invalidation-mode",
            "unchecked-hash",
            str(venv),
            str(app),
        ],
        check=True,
        timeout=300,
    )
    for path in [tree, *tree.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o555 if path.is_dir() or os.access(path, os.X_OK) else 0o444)
    yield tree
    for path in [tree, *tree.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(tree)


def _run(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{tree}/venv/bin:/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [str(tree / "venv" / "bin" / "python"), str(tree / "app" / "reconciler.py"), *args]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    return subprocess.run(cmd, cwd=tree / "app", env=env, capture_output=True, text=True, timeout=120)


def test_help_runs_from_the_image_tree(image_tree: Path) -> None:
    done = _run(image_tree, "--help")
    assert done.returncode == 0, done.stderr
    assert "--service-name" in done.stdout


def test_a_reconcile_runs_from_the_image_tree_read_only_and_unprivileged(
    image_tree: Path, tmp_path: Path
) -> None:
    before = sorted(p for p in image_tree.rglob("*"))
    with FakeApiServer() as fake:
        fake.set_nodes([make_node("node-a", "10.0.0.1"), make_node("node-b", "10.0.0.2")])
        kubeconfig = fake.write_kubeconfig(image_tree.parent / f"{image_tree.name}.kubeconfig")
        os.chmod(kubeconfig, 0o444)
        done = _run(image_tree, "--kubeconfig", kubeconfig, "--termination-log", "")
        assert done.returncode == 0, done.stdout + done.stderr
        assert '"outcome": "applied"' in done.stdout
        assert fake.get_object("Endpoints", "kube-system", "kubelet") is not None
    os.unlink(kubeconfig)
    # Nothing was written into the tree (no __pycache__ appeared).
    assert sorted(p for p in image_tree.rglob("*")) == before
