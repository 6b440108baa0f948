"""One measured variant, run by ``bench/bench.py`` in a fresh interpreter.

    python -m bench.child floor KUBECONFIG PAGE_SIZE
    python -m bench.child floor-gc-paused KUBECONFIG PAGE_SIZE
    python -m bench.child naive KUBECONFIG PAGE_SIZE
    python -m bench.child start KUBECONFIG
    python -m bench.child reconcile PAGE_SIZE -- RECONCILER_ARGS...

* ``floor``: the limit of this stack. The same client (``lib.kube.load_client``:
  the official client's kubeconfig loader, ``ApiClient``, urllib3) fetches the
  same pages and ``json.loads`` each one; nothing else.
* ``floor-gc-paused``: the same with the cyclic GC paused while each page is
  fetched and parsed, as the reconciler does (``lib/kube.py``): the stricter
  floor.
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

import gc
import json
import os
import sys
from typing import Any


def _client(kubeconfig: str) -> Any:
    from lib.kube import load_client

    return load_client(kubeconfig, None, os.environ)


def floor(kubeconfig: str, page_size: int, gc_paused: bool = False) -> dict[str, Any]:
    client = _client(kubeconfig)
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


def naive(kubeconfig: str, page_size: int) -> dict[str, Any]:
    from kubernetes.client import CoreV1Api

    from lib import desired
    from lib.nodes import NodeInfo

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

    def info(node: Any) -> NodeInfo:
        ready = next((c.status for c in node.status.conditions or () if c.type == "Ready"), None)
        return NodeInfo(
            name=node.metadata.name,
            uid=node.metadata.uid or "",
            created=node.metadata.creation_timestamp,
            deleting=node.metadata.deletion_timestamp is not None,
            ready=ready,
            addresses=tuple(
                (a.type, a.address)
                for a in node.status.addresses or ()
                if a.type in ("InternalIP", "ExternalIP")
            ),
        )

    sel = desired.select([info(n) for n in models], "internal")
    return {"nodes": sel.nodes_total, "eligible": sel.nodes_eligible, "pages": pages}


def start(kubeconfig: str) -> dict[str, Any]:
    import lib.run  # noqa: F401  (the reconciler's imports)

    _client(kubeconfig)
    return {"modules": len(sys.modules)}


def reconcile(page_size: int, args: list[str]) -> int:
    import lib.kube
    from lib.run import main

    lib.kube.PAGE_SIZE = page_size
    return main(args)


def run(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "reconcile":
        return reconcile(int(argv[1]), argv[3:] if argv[2:3] == ["--"] else argv[2:])
    if mode in ("floor", "floor-gc-paused"):
        result = floor(argv[1], int(argv[2]), gc_paused=mode == "floor-gc-paused")
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
