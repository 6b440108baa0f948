"""Objects as prometheus-operator's kubelet controller leaves them, on the real server.

Shared by the real-server run tests and the migration guide's test: plain
create by field manager ``prometheus-operator`` (not apply), three ports,
every node's address (duplicates included), and a ``generateName`` slice.
"""

from __future__ import annotations

import time

from tests.fakeapi import make_node
from tests.realserver import RealApiServer

SLICES = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
OPERATOR = "prometheus-operator"


def operator_objects(real: RealApiServer, ns: str, service: str) -> None:
    """What prometheus-operator's kubelet controller leaves: plain create/update, three ports,
    every node's address (duplicates included), and a generateName slice of its own."""
    q = {"fieldManager": OPERATOR}
    ports = [
        {"name": "https-metrics", "port": 10250},
        {"name": "http-metrics", "port": 10255},
        {"name": "cadvisor", "port": 4194},
    ]
    labels = {
        "k8s-app": "kubelet",
        "app.kubernetes.io/name": "kubelet",
        "app.kubernetes.io/managed-by": OPERATOR,
    }
    real.ok(
        "POST",
        f"/api/v1/namespaces/{ns}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service, "labels": labels},
            "spec": {"clusterIP": "None", "ports": ports},
        },
        query=q,
    )
    addresses = [
        {
            "ip": n["status"]["addresses"][0]["address"],
            "targetRef": {"kind": "Node", "name": n["metadata"]["name"]},
        }
        for n in real.nodes()
    ]
    real.ok(
        "POST",
        f"/api/v1/namespaces/{ns}/endpoints",
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": service, "labels": labels},
            "subsets": [{"addresses": addresses, "ports": ports}],
        },
        query=q,
    )
    real.ok(
        "POST",
        SLICES.format(ns=ns),
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "generateName": f"{service}-",
                "labels": {
                    **labels,
                    "kubernetes.io/service-name": service,
                    "endpointslice.kubernetes.io/managed-by": OPERATOR,
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [a["ip"]], "conditions": {"ready": True}} for a in addresses],
            "ports": ports,
        },
        query=q,
    )


def seed_case(real: RealApiServer) -> None:
    """The seed case: node A NotReady keeps 1.2.3.4, the newer node B is given it; two Ready nodes more."""
    real.create_nodes([make_node("node-a", "1.2.3.4", ready="Unknown"), make_node("node-c", "10.0.0.5")])
    time.sleep(1.1)  # creationTimestamp has one-second resolution: node-b is newer
    real.create_nodes([make_node("node-b", "1.2.3.4"), make_node("node-d", "10.0.0.6")])
