"""``make run``: one real reconcile against a built-in demo cluster, never a real one.

The demo cluster is the fake API server (``tests/fakeapi/``) on 127.0.0.1,
seeded with the IP-reuse case and an Endpoints object as prometheus-operator's
kubelet controller leaves it: the NotReady node A and the new node B both at
1.2.3.4. The run is the real ``reconciler.py`` code path over real HTTP;
before and after, the published targets are printed so the duplicate is seen
to go.

Whatever ``KUBECONFIG``, ``~/.kube/config`` or the ``KUBELET_ENDPOINTS_*``
variables say, the run talks to the demo cluster only: the first command a
README gives must be safe to paste anywhere. It ends by printing the two
commands for a real cluster, the server-side dry run first.

Usage: ``python -m tools.demo [reconciler flags...]``
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


NEXT_STEPS = """
That was the demo cluster. For a real cluster, run the reconciler itself with your
kubeconfig (or --kubeconfig/--context): first a server-side dry run, which shows in
the log what it would change and persists nothing, then the real run:

    .venv/bin/python reconciler.py --dry-run --log-format console
    .venv/bin/python reconciler.py --log-format console
"""


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
        kubeconfig = fake.write_kubeconfig(os.path.join(tmp, "kubeconfig"), context="demo")
        print(
            "make run: the built-in demo cluster (never the cluster of KUBECONFIG or ~/.kube/config):\n"
            f"  a fake API server on {fake.url}, seeded with the IP-reuse case.\n\nNodes:",
            *_nodes_table(),
            "\nPublished before (as prometheus-operator's controller leaves it: 1.2.3.4 twice):",
            *_targets(fake),
            "\nRunning reconciler.py --kubeconfig <demo> --log-format console ...\n",
            sep="\n",
            flush=True,
        )
        # Nothing from the caller's environment may point the run elsewhere:
        # no KUBECONFIG, no KUBELET_ENDPOINTS_* (a context or namespace meant
        # for a real cluster), and the demo's --kubeconfig comes last, so a
        # --kubeconfig or --context in ARGS cannot override it either.
        environ = {
            k: v
            for k, v in os.environ.items()
            if k != "KUBECONFIG" and not k.startswith("KUBELET_ENDPOINTS_")
        }
        args = [*argv, "--log-format", "console", "--kubeconfig", kubeconfig, "--context", "demo"]
        code = reconcile_main(args, environ)
        print("\nPublished after (each IP once, Ready nodes only):", *_targets(fake), sep="\n")
        print(
            f"\nexit code {code}. node-b keeps 1.2.3.4; node-a (NotReady, same IP) and node-e"
            " (NotReady) are not published;\n"
            "node-c keeps 10.0.0.5 over the older node-f (ip_conflict above).",
        )
        print(NEXT_STEPS)
        return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
