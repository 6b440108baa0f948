"""The benchmark's API server: ``tests/fakeapi/`` in a process of its own.

Run by ``bench/bench.py`` (never by hand)::

    python -m bench.server --nodes N --bulk BYTES --kubeconfig OUT

It generates the N synthetic nodes once (each about BULK bytes of realistic
JSON: labels, annotations, managedFields, an image list; dual-stack IPv4 and
IPv6 InternalIPs), serves them with paging until stdin closes, and answers
one JSON command per stdin line with one JSON line on stdout, so the
benchmark can change a node, empty the cluster of our objects, or read the
request log without sharing a process (and a GIL) with what it measures.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

from tests.fakeapi import FakeApiServer, make_node

NAMESPACE = "kube-system"
#: One node in this many is NotReady, as in a big cluster on any given minute.
NOT_READY_EVERY = 97
_COLLECTIONS = {
    "Service": f"/api/v1/namespaces/{NAMESPACE}/services",
    "Endpoints": f"/api/v1/namespaces/{NAMESPACE}/endpoints",
    "EndpointSlice": f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices",
}


def node_name(i: int) -> str:
    return f"node-{i:05d}"


def bench_node(i: int, bulk: int, ready: str = "") -> dict[str, Any]:
    """Node ``i``: unique dual-stack addresses, created a minute apart, some NotReady."""
    name = node_name(i)
    ipv4 = f"10.{64 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"
    ipv6 = f"fd00:10::{i + 1:x}"
    if not ready:
        ready = "False" if i % NOT_READY_EVERY == NOT_READY_EVERY - 1 else "True"
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_750_000_000 + 60 * i))
    addresses = [("InternalIP", ipv4), ("InternalIP", ipv6), ("Hostname", name)]
    return make_node(name, addresses, ready=ready, created=created, bulk=bulk)


def _nodes(count: int, bulk: int) -> Iterator[dict[str, Any]]:
    # A generator: the server keeps each node as serialised bytes only.
    for i in range(count):
        yield bench_node(i, bulk)


class Control:
    """The commands the benchmark sends, one JSON object per line."""

    def __init__(self, server: FakeApiServer, bulk: int) -> None:
        self.server = server
        self.bulk = bulk

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd.get("op")
        if op == "set_ready":
            # Rebuild the node with another Ready status (a new resourceVersion).
            i = int(cmd["index"])
            self.server.put_node(bench_node(i, self.bulk, ready=str(cmd["ready"])))
            return {"ok": True, "node": node_name(i)}
        if op == "reset":
            return {"ok": True, "deleted": self._delete_objects()}
        if op == "clear_log":
            self.server.clear_log()
            return {"ok": True}
        if op == "log":
            return {"ok": True, **self._log_summary()}
        if op == "versions":
            return {"ok": True, "versions": self._versions()}
        if op == "writes":
            return {"ok": True, "writes": self._writes()}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _delete_objects(self) -> int:
        # Through HTTP, like any client: the fake has no back door for deletes.
        deleted = 0
        for kind, path in _COLLECTIONS.items():
            for obj in self.server.objects(kind, NAMESPACE):
                request = urllib.request.Request(
                    f"{self.server.url}{path}/{obj['metadata']['name']}",
                    method="DELETE",
                    headers={"Authorization": f"Bearer {self.server.token}"},
                )
                with urllib.request.urlopen(request, timeout=30) as resp:
                    resp.read()
                deleted += 1
        return deleted

    def _writes(self) -> list[dict[str, Any]]:
        # What the floor replays raw after its pages: every write of the
        # logged run, byte for byte, in order (bodies base64: apply bodies are bytes).
        return [
            {
                "method": r.method,
                "path": r.path,
                "query": r.query,
                "content_type": r.content_type,
                "body": base64.b64encode(r.body).decode(),
            }
            for r in self.server.requests
            if r.method not in ("GET", "HEAD")
        ]

    def _versions(self) -> dict[str, str]:
        return {
            f"{kind}/{obj['metadata']['name']}": str(obj["metadata"]["resourceVersion"])
            for kind in _COLLECTIONS
            for obj in self.server.objects(kind, NAMESPACE)
        }

    def _log_summary(self) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        limits: Counter[str] = Counter()
        patch_sizes: dict[str, list[int]] = {}
        for r in self.server.requests:
            kind = _kind_of_path(r.path)
            counts[f"{r.method} {kind}"] += 1
            if r.path == "/api/v1/nodes":
                limits[r.query.get("limit", "")] += 1
            if r.method == "PATCH":
                patch_sizes.setdefault(kind, []).append(len(r.body))
        return {
            "requests": sum(counts.values()),
            "by_kind": dict(sorted(counts.items())),
            "node_list_limits": dict(limits),
            "patch_bytes": {
                kind: {"count": len(sizes), "max": max(sizes), "total": sum(sizes)}
                for kind, sizes in sorted(patch_sizes.items())
            },
        }


def _kind_of_path(path: str) -> str:
    if path.startswith("/api/v1/nodes"):
        return "nodes"
    for kind, prefix in _COLLECTIONS.items():
        if path.startswith(prefix):
            return kind if path != prefix else f"{kind}List"
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--bulk", type=int, default=20000)
    parser.add_argument("--kubeconfig", required=True)
    args = parser.parse_args(argv)

    started = time.monotonic()
    server = FakeApiServer()
    server.set_nodes(_nodes(args.nodes, args.bulk))
    generated = time.monotonic() - started
    server.start()
    try:
        server.write_kubeconfig(args.kubeconfig)
        control = Control(server, args.bulk)
        print(json.dumps({"url": server.url, "generated_s": round(generated, 2)}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                reply = control.handle(json.loads(line))
            except Exception as exc:  # report, keep serving: the benchmark decides
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
