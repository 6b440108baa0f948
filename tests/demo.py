"""``make run`` without a KUBECONFIG: one real reconcile against a demo cluster.

The demo cluster is the fake API server (``tests/fakeapi/``) on 127.0.0.1,
seeded with the IP-reuse case and an Endpoints object as prometheus-operator's
kubelet controller leaves it: the NotReady node A and the new node B both at
1.2.3.4. The run is the real ``reconciler.py`` code path over real HTTP;
before and after, the published targets are printed so the duplicate is seen
to go.

Usage: ``python -m tests.demo [reconciler flags...]``
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from lib.run import main as reconcile_main
from tests.fakeapi import FakeApiServer, make_node

NAMESPACE, SERVICE = "kube-system", "kubelet"

NODES = [
    # Node A went NotReady last week but kept its IP...
    make_node("node-a", "1.2.3.4", ready="Unknown", created="2026-01-10T08:00:00Z"),
    # ...and the new node B was given the same IP.
    make_node("node-b", "1.2.3.4", created="2026-11-20T09:30:00Z"),
    make_node("node-c", "10.0.0.5", created="2026-02-01T00:00:00Z"),
    make_node(
        "node-d", [("InternalIP", "10.0.0.6"), ("InternalIP", "fd00::6")], created="2026-02-01T00:00:00Z"
    ),
    make_node("node-e", "10.0.0.7", ready="False", created="2026-03-01T00:00:00Z"),
    # Two Ready nodes on one IP (a stale record): the newer node, node-c, keeps it.
    make_node("node-f", "10.0.0.5", created="2025-12-01T00:00:00Z"),
]


def _stale_endpoints() -> dict[str, Any]:
    """The Endpoints as a controller that publishes every node with an IP leaves them."""
    addresses = [
        {
            "ip": addr["address"],
            "nodeName": n["metadata"]["name"],
            "targetRef": {"kind": "Node", "name": n["metadata"]["name"], "uid": n["metadata"]["uid"]},
        }
        for n in NODES
        for addr in n["status"]["addresses"][:1]
    ]
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            "labels": {"k8s-app": "kubelet", "app.kubernetes.io/managed-by": "prometheus-operator"},
        },
        "subsets": [{"addresses": addresses, "ports": [{"name": "https-metrics", "port": 10250}]}],
    }


def _targets(fake: FakeApiServer) -> list[str]:
    lines = []
    ep = fake.get_object("Endpoints", NAMESPACE, SERVICE) or {}
    for subset in ep.get("subsets") or ():
        for a in subset.get("addresses") or ():
            lines.append(f"    Endpoints {SERVICE}: {a['ip']:<10} -> {a.get('nodeName')}")
    for s in fake.objects("EndpointSlice", NAMESPACE):
        for e in s.get("endpoints") or ():
            name = s["metadata"]["name"]
            lines.append(f"    EndpointSlice {name}: {e['addresses'][0]:<10} -> {e.get('nodeName')}")
    return lines or ["    (nothing published)"]


def _nodes_table() -> list[str]:
    out = []
    for n in NODES:
        ready = next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready")
        ips = ", ".join(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
        created = n["metadata"]["creationTimestamp"]
        out.append(f"    {n['metadata']['name']}  Ready={ready:<7}  created {created}  {ips}")
    return out


def run(argv: Sequence[str]) -> int:
    with FakeApiServer() as fake, tempfile.TemporaryDirectory() as tmp:
        fake.set_nodes(NODES)
        fake.apply_as("prometheus-operator", _stale_endpoints())
        kubeconfig = fake.write_kubeconfig(os.path.join(tmp, "kubeconfig"))
        print(
            "make run: no KUBECONFIG set, so this is the built-in demo cluster:\n"
            f"  a fake API server on {fake.url}, seeded with the IP-reuse case.\n"
            "  (Set KUBECONFIG to reconcile a real cluster.)\n\nNodes:",
            *_nodes_table(),
            "\nPublished before (as prometheus-operator's controller leaves it: 1.2.3.4 twice):",
            *_targets(fake),
            "\nRunning reconciler.py --kubeconfig <demo> --log-format console ...\n",
            sep="\n",
            flush=True,
        )
        environ = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        code = reconcile_main(["--kubeconfig", kubeconfig, "--log-format", "console", *argv], environ)
        print("\nPublished after (each IP once, Ready nodes only):", *_targets(fake), sep="\n")
        print(
            f"\nexit code {code}. node-b keeps 1.2.3.4; node-a (NotReady, same IP) and node-e"
            " (NotReady) are not published;\n"
            "node-c keeps 10.0.0.5 over the older node-f (ip_conflict above).",
        )
        return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
