"""One measured variant, run by ``bench/bench.py`` in a fresh interpreter.

    python -m bench.child floor KUBECONFIG PAGE_SIZE
    python -m bench.child floor-gc-paused KUBECONFIG PAGE_SIZE
    python -m bench.child floor-write KUBECONFIG PAGE_SIZE WRITES_JSON
    python -m bench.child naive KUBECONFIG PAGE_SIZE
    python -m bench.child start KUBECONFIG
    python -m bench.child reconcile PAGE_SIZE -- RECONCILER_ARGS...

* ``floor``: the limit of this stack. The same client (``lib.kube.load_client``:
  the official client's kubeconfig loader, ``ApiClient``, urllib3) fetches the
  same pages and ``json.loads`` each one; nothing else.
* ``floor-gc-paused``: the same with the cyclic GC paused while each page is
  fetched and parsed, as the reconciler does (``lib/kube/``): the stricter
  floor.
* ``floor-write``: the floor's pages, then the writes a reconcile made from
  an empty namespace (recorded by the server, ``WRITES_JSON``) replayed
  byte for byte through the same client, each answer read and parsed: the
  floor of a run that writes everything.
* ``naive``: what most scripts do: ``CoreV1Api.list_node()`` with the
  client's full model deserialisation, every page kept, then the same
  selection (``lib.desired.select``) as the reconciler.
* ``start``: interpreter start, the reconciler's imports and the client
  loaded; no request (the fixed cost of every run).
* ``reconcile``: ``lib.run.main`` (what ``reconciler.py`` runs) with another
  node-list page size, for the page-size sweep.

Each prints one JSON line with what it counted.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import sys
from typing import Any


def _client(kubeconfig: str) -> Any:
    from lib.kube import load_client

    return load_client(kubeconfig, None, os.environ)


def floor(client: Any, page_size: int, gc_paused: bool = False) -> dict[str, Any]:
    items = pages = 0
    token = ""
    while True:
        if gc_paused:
            gc.disable()
        query = [("limit", str(page_size))] + ([("continue", token)] if token else [])
        _, url, headers, _, _ = client.param_serialize(
            method="GET",
            resource_path="/api/v1/nodes",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        resp = client.call_api("GET", url, header_params=headers, _request_timeout=60)
        page = json.loads(resp.read())
        del resp
        pages += 1
        items += len(page["items"])
        token = page["metadata"].get("continue") or ""
        del page
        gc.enable()
        if not token:
            return {"nodes": items, "pages": pages}


def floor_write(kubeconfig: str, page_size: int, writes_file: str) -> dict[str, Any]:
    with open(writes_file, encoding="utf-8") as f:
        writes = json.load(f)
    client = _client(kubeconfig)
    listed = floor(client, page_size)
    for w in writes:
        raw = base64.b64decode(w["body"])
        content_type = w["content_type"] or "application/json"
        # As lib/kube/ sends them: apply bodies as bytes, other bodies as JSON values.
        body = raw if content_type == "application/apply-patch+yaml" else (json.loads(raw) if raw else None)
        _, url, headers, _, _ = client.param_serialize(
            method=w["method"],
            resource_path=w["path"],
            query_params=list(w["query"].items()) or None,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            auth_settings=["BearerToken"],
        )
        resp = client.call_api(w["method"], url, header_params=headers, body=body, _request_timeout=60)
        if resp.status not in (200, 201, 202):
            raise SystemExit(f"{w['method']} {w['path']}: {resp.status}")
        json.loads(resp.read())
    return {**listed, "writes": len(writes)}


def naive(kubeconfig: str, page_size: int) -> dict[str, Any]:
    from kubernetes.client import CoreV1Api

    from lib import desired
    from lib.nodes import Node, choose_addresses

    api = CoreV1Api(_client(kubeconfig))
    models: list[Any] = []
    token = None
    pages = 0
    while True:
        resp = api.list_node(limit=page_size, _continue=token, _request_timeout=60)
        pages += 1
        models.extend(resp.items)
        token = resp.metadata.var_continue
        if not token:
            break

    def node(model: Any) -> Node:
        meta, status = model.metadata, model.status
        ready = next((c.status for c in status.conditions or () if c.type == "Ready"), None)
        if ready != "True" or meta.deletion_timestamp is not None:
            return Node(meta.name, False)
        addresses = [(a.type, a.address) for a in status.addresses or ()]
        ips, skips = choose_addresses(meta.name, addresses, "internal")
        return Node(meta.name, True, meta.uid or "", meta.creation_timestamp, ips, tuple(skips))

    sel = desired.select([node(m) for m in models])
    return {"nodes": sel.nodes_total, "eligible": sel.nodes_eligible, "pages": pages}


def start(kubeconfig: str) -> dict[str, Any]:
    import lib.run  # noqa: F401  (the reconciler's imports)

    _client(kubeconfig)
    return {"modules": len(sys.modules)}


def reconcile(page_size: int, args: list[str]) -> int:
    import lib.kube.api
    from lib.run import main

    lib.kube.api.PAGE_SIZE = page_size
    return main(args)


def run(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "reconcile":
        return reconcile(int(argv[1]), argv[3:] if argv[2:3] == ["--"] else argv[2:])
    if mode in ("floor", "floor-gc-paused"):
        result = floor(_client(argv[1]), int(argv[2]), gc_paused=mode == "floor-gc-paused")
    elif mode == "floor-write":
        result = floor_write(argv[1], int(argv[2]), argv[3])
    elif mode == "naive":
        result = naive(argv[1], int(argv[2]))
    elif mode == "start":
        result = start(argv[1])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
