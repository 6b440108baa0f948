"""Bad input: each ends with its documented code, a clear reason, and nothing written.

Every case runs against a cluster whose objects are already published, so
"nothing written" is checked twice: no PATCH or DELETE reached the API
server, and every stored object keeps its ``resourceVersion``.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakeapi import FakeApiServer, make_node
from tests.runs import run_main, versions

NS = "kube-system"
NODES = "/api/v1/nodes"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
ENDPOINTS = "/api/v1/namespaces/kube-system/endpoints/kubelet"
#: Deadline of the runs that must retry until they give up (exit 4).
SHORT = "1.5"


@dataclass(frozen=True)
class Case:
    """One bad input: how to set it up, the flags, the exit code, and words the reason must hold."""

    name: str
    code: int
    reason: str  # a regex the one-line reason must match (case-insensitive)
    flags: tuple[str, ...] = ()
    setup: Callable[[FakeApiServer, Path], str | None] | None = None  # -> the kubeconfig to use
    environ: tuple[tuple[str, str], ...] = ()
    no_request: bool = False  # refused before any request: not even a read reaches the server


def _kubeconfig_text(text: str) -> Callable[[FakeApiServer, Path], str]:
    def setup(fake: FakeApiServer, tmp: Path) -> str:
        path = tmp / "bad-kubeconfig"
        path.write_text(text, encoding="utf-8")
        return str(path)

    return setup


def _server_url(url: Callable[[FakeApiServer], str]) -> Callable[[FakeApiServer, Path], str]:
    def setup(fake: FakeApiServer, tmp: Path) -> str:
        return fake.write_kubeconfig(tmp / "other-kubeconfig", server=url(fake))

    return setup


def _refused(fake: FakeApiServer) -> str:
    with socket.socket() as s:  # a port nobody listens on once this closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _inject(method: str, path: str, **fault: Any) -> Callable[[FakeApiServer, Path], None]:
    def setup(fake: FakeApiServer, tmp: Path) -> None:
        fake.inject(method, path, times=-1, **fault)

    return setup


def _node_list_body(items: list[Any]) -> bytes:
    return json.dumps({"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": items}).encode()


def _nodes(*nodes: dict[str, Any]) -> Callable[[FakeApiServer, Path], None]:
    def setup(fake: FakeApiServer, tmp: Path) -> None:
        fake.set_nodes([make_node("node-a", "10.0.0.1"), *nodes])

    return setup


def _without(key: str) -> dict[str, Any]:
    node = make_node("node-z", "10.0.0.9")
    del node[key]
    node.setdefault("metadata", {"name": "node-z"})  # the fake stores nodes by name
    return node


CASES = [
    # --- configuration: exit 3, before any request -------------------------------
    Case(
        "malformed kubeconfig",
        3,
        r"cannot load",
        setup=_kubeconfig_text("clusters: [unclosed\n  - {{{\n"),
        no_request=True,
    ),
    Case(
        "kubeconfig that is not a kubeconfig",
        3,
        r"cannot load",
        setup=_kubeconfig_text("- just\n- a list\n"),
        no_request=True,
    ),
    Case("empty kubeconfig", 3, r"cannot load", setup=_kubeconfig_text(""), no_request=True),
    Case(
        "kubeconfig naming a missing context",
        3,
        r"cannot load.*nowhere",
        flags=("--context", "nowhere"),
        no_request=True,
    ),
    Case(
        "TLS failure (https:// to a plain-HTTP server)",
        3,
        r"TLS",
        setup=_server_url(lambda f: f"https://127.0.0.1:{f.port}"),
    ),
    # --- the API server cannot be reached or answers garbage: exit 4 after retries ----
    Case("connection refused", 4, r"refused|NewConnectionError", setup=_server_url(_refused)),
    Case("non-JSON node list", 4, r"not JSON", setup=_inject("GET", NODES, body=b"<html>oops</html>")),
    Case("truncated node list", 4, r"GET /api/v1/nodes", setup=_inject("GET", NODES, truncate=True)),
    Case("non-JSON slice list", 4, r"not JSON", setup=_inject("GET", SLICES, body=b"{not json")),
    Case("truncated Endpoints read", 4, r"endpoints/kubelet", setup=_inject("GET", ENDPOINTS, truncate=True)),
    Case("node without status", 4, r"malformed node list.*no status", setup=_nodes(_without("status"))),
    Case(
        "node without metadata",
        4,
        r"malformed node list.*metadata",
        setup=_inject("GET", NODES, body=_node_list_body([{"kind": "Node", "status": {}}])),
    ),
    Case(
        "node list item not an object",
        4,
        r"malformed node list",
        setup=_inject("GET", NODES, body=_node_list_body(["node-a"])),
    ),
    Case(
        "node list whose items are not a list",
        4,
        r"response is not a list",
        setup=_inject("GET", NODES, body=b'{"kind":"NodeList","items":{"a":1}}'),
    ),
    Case(
        "node list that is not an object",
        4,
        r"response is a JSON list, not an object",
        setup=_inject("GET", NODES, body=b"[1, 2, 3]"),
    ),
    # --- what the reason says when the server says little ----------------------------
    Case(
        "403 whose Status has no reason: the HTTP phrase, never a type name",
        5,
        r"GET /api/v1/nodes: 403 Forbidden: Access denied by webhook$",
        setup=_inject(
            "GET", NODES, status=403, body=b'{"kind":"Status","message":"Access denied by webhook"}'
        ),
    ),
    Case(
        "404 answered by an HTML page (a proxy)",
        4,
        r"unexpected 404 Not Found: <html>not here</html>",
        setup=_inject("GET", NODES, status=404, body=b"<html>not here</html>"),
    ),
    Case(
        "429 whose Retry-After is past the deadline",
        4,
        r"429 .*the server asked to retry after 120s, past the run's deadline",
        setup=_inject("GET", NODES, status=429, retry_after="120"),
    ),
    Case(
        "http:// to the API server's TLS port",
        3,
        r"speaks TLS.*must start with https://",
        setup=_inject("GET", NODES, status=400, body=b"Client sent an HTTP request to an HTTPS server.\n"),
    ),
    # --- usage: exit 2 ---------------------------------------------------------------
    Case(
        "label selector the server rejects",
        2,
        r"--node-selector.*rejected",
        flags=("--node-selector", "role in (a,"),
    ),
    Case(
        "label selector with an empty set",
        2,
        r"--node-selector.*rejected",
        flags=("--node-selector", "tier in ()"),
    ),
    Case(
        "--service-name 1kubelet: a Service name starts with a letter",
        2,
        r"--service-name '1kubelet'.*DNS-1035",
        flags=("--service-name", "1kubelet"),
        no_request=True,
    ),
    Case(
        "--max-endpoints-per-slice 0",
        2,
        r"--max-endpoints-per-slice 0",
        flags=("--max-endpoints-per-slice", "0"),
        no_request=True,
    ),
    Case(
        "--max-endpoints-per-slice 1001",
        2,
        r"--max-endpoints-per-slice",
        flags=("--max-endpoints-per-slice", "1001"),
        no_request=True,
    ),
    Case(
        "--max-endpoints-per-slice -3",
        2,
        r"--max-endpoints-per-slice",
        flags=("--max-endpoints-per-slice", "-3"),
        no_request=True,
    ),
    Case(
        "--max-endpoints-per-slice abc",
        2,
        r"not a whole number",
        flags=("--max-endpoints-per-slice", "abc"),
        no_request=True,
    ),
    Case("--timeout -1", 2, r"--timeout '-1'", flags=("--timeout", "-1"), no_request=True),
    Case("--timeout 0", 2, r"--timeout", flags=("--timeout", "0"), no_request=True),
    Case("--timeout nan", 2, r"--timeout", flags=("--timeout", "nan"), no_request=True),
    Case("--timeout inf", 2, r"--timeout", flags=("--timeout", "inf"), no_request=True),
    Case("--timeout of a day", 2, r"--timeout", flags=("--timeout", "86400"), no_request=True),
    Case("unknown --resources", 2, r"--resources.*pods", flags=("--resources", "pods"), no_request=True),
    Case("empty --resources", 2, r"--resources", flags=("--resources", ","), no_request=True),
    Case("unknown flag", 2, r"unrecognized arguments", flags=("--bogus",), no_request=True),
    Case("abbreviated flag", 2, r"unrecognized arguments", flags=("--name", "other"), no_request=True),
    Case("bad --address-type", 2, r"address-type", flags=("--address-type", "both"), no_request=True),
    Case("bad namespace", 2, r"--namespace", flags=("--namespace", "Kube_System"), no_request=True),
    Case(
        "absurd value from the environment",
        2,
        r"--timeout",
        environ=(("KUBELET_ENDPOINTS_TIMEOUT", "-1"),),
        no_request=True,
    ),
    Case(
        "bad boolean from the environment",
        2,
        r"KUBELET_ENDPOINTS_DRY_RUN",
        environ=(("KUBELET_ENDPOINTS_DRY_RUN", "maybe"),),
        no_request=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_ends_with_its_code_and_writes_nothing(
    case: Case, fake: FakeApiServer, kubeconfig: str, tmp_path: Path
) -> None:
    fake.set_nodes([make_node("node-a", "10.0.0.1"), make_node("node-b", "10.0.0.2")])
    assert run_main(["--kubeconfig", kubeconfig, "--termination-log", ""], {}).code == 0
    published = versions(fake)
    assert len(published) == 3
    fake.clear_log()

    config = case.setup(fake, tmp_path) if case.setup else None
    argv = ["--kubeconfig", config or kubeconfig, "--termination-log", "", "--timeout", SHORT, *case.flags]
    if any(f.startswith("--timeout") for f in case.flags) or case.environ:
        argv.remove("--timeout")
        argv.remove(SHORT)
    result = run_main(argv, case.environ)

    line = result.finished
    assert (result.code, line["outcome"]) == (case.code, "failed"), line
    reason = str(line["reason"])
    assert "\n" not in reason and len(reason) < 1000
    assert re.search(case.reason, reason, re.I), reason
    assert result.seconds < float(SHORT) + 1.5
    assert [(r.method, r.path) for r in fake.requests if r.method not in ("GET", "HEAD")] == []
    fake.clear_faults()
    assert versions(fake) == published
    if case.no_request:
        assert fake.requests == []
