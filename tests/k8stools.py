"""Finding helm and kubectl (with its built-in kustomize) for the chart and kustomize tiers.

``tools/install-k8s-tools.sh`` installs both into a cache directory
(``.ci/run`` calls it). A tool is found, in order, by the environment variable
``HELM`` / ``KUBECTL``, in that cache directory, or on ``PATH``. Missing on a
user's machine, its tier is skipped with one line saying how to install it;
under CI (``CI=true``) a missing tool fails instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

#: The version of the npm package the install script pins (its cache folder).
TOOLS_VERSION = "2.0.4"


def cache_dir() -> Path:
    """Where tools/install-k8s-tools.sh puts helm and kubectl."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kubelet-endpoints-reconciler" / f"k8s-tools-{TOOLS_VERSION}"


def find(name: str) -> str | None:
    """The path of ``helm`` or ``kubectl``, or None."""
    explicit = os.environ.get(name.upper())
    if explicit:
        return explicit
    cached = cache_dir() / name
    if os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which(name)


def require(name: str) -> str:
    """The tool's path; skips the test (fails under CI) when it is missing."""
    found = find(name)
    if found is None:
        message = f"{name} not found: run tools/install-k8s-tools.sh (or set {name.upper()})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found
