"""Kubernetes versions: the ``/version`` answer the fake gives, and reading a server's.

The fake imitates current Kubernetes (v1.35) by default and v1.24 on demand,
where the two differ (``../shared/k8s/README.md`` lists how). Tests of the
real-server tier ask the server its ``/version`` with :func:`server_minor`
and expect that version's answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tests.fakeapi.core import JSON

CURRENT_VERSION = "1.35"
#: The oldest server reviewed; also what a build that carries no version number is taken for.
OLD_MINOR = 24
#: v1 Endpoints draw a deprecation warning from this minor version on.
ENDPOINTS_DEPRECATED_MINOR = 33
ENDPOINTS_WARNING = '299 - "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"'


def version_minor(version: str) -> int:
    """``"1.35"`` -> 35; only the two versions the fake knows are accepted."""
    match = re.fullmatch(r"v?1\.(\d+)(?:\.\d+)?", version)
    if match is None or int(match[1]) not in (OLD_MINOR, int(CURRENT_VERSION.split(".")[1])):
        raise ValueError(f"the fake imitates Kubernetes 1.{OLD_MINOR} or {CURRENT_VERSION}, not {version!r}")
    return int(match[1])


def server_minor(body: Mapping[str, Any]) -> int:
    """The minor version of a server from its ``/version`` body.

    A released server fills ``major``/``minor`` (``"35"``, or ``"35+"`` on some
    distributions) and ``gitVersion`` (``v1.35.0``). A build made from a source
    tree without version stamping, as envtest's v1.24 binaries can be, answers
    ``v0.0.0-master+...`` with ``major``/``minor`` empty: no number to read, so
    it is taken for the oldest version reviewed, v1.24 (the only such build seen).
    """
    major = re.match(r"\d+", str(body.get("major") or ""))
    minor = re.match(r"\d+", str(body.get("minor") or ""))
    if major and minor and int(major[0]) >= 1:
        return int(minor[0])
    git = re.match(r"v?(\d+)\.(\d+)", str(body.get("gitVersion") or ""))
    if git and int(git[1]) >= 1:
        return int(git[2])
    return OLD_MINOR


def version_body(minor: int) -> JSON:
    """``/version`` as a server of version 1.``minor`` answers it."""
    if minor <= OLD_MINOR:
        # A v1.24 build without version stamping, as envtest's can be.
        return {
            "major": "",
            "minor": "",
            "gitVersion": "v0.0.0-master+$Format:%H$",
            "gitCommit": "$Format:%H$",
            "gitTreeState": "",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "go1.18.2",
            "compiler": "gc",
            "platform": "linux/amd64",
        }
    return {
        "major": "1",
        "minor": str(minor),
        "emulationMajor": "1",
        "emulationMinor": str(minor),
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": str(minor - 1),
        "gitVersion": f"v1.{minor}.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-12-17T00:00:00Z",
        "goVersion": "go1.25.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    }
