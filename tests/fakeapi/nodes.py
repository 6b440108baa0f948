"""Realistic Node objects for tests and the benchmark (``bulk`` pads them to a real node's size)."""

from __future__ import annotations

import functools
import hashlib
import json
import uuid

from tests.fakeapi.core import JSON, dumps


def make_node(
    name: str,
    ip: str | list[tuple[str, str]] | None = None,
    *,
    ready: str | None = "True",
    created: str = "2026-01-01T00:00:00Z",
    deleting: bool = False,
    uid: str | None = None,
    labels: dict[str, str] | None = None,
    bulk: int = 0,
) -> JSON:
    """A realistic Node object.

    ``ip``: a string gives ``[("InternalIP", ip), ("Hostname", name)]``; a list
    of (type, address) pairs is used as-is; None gives no addresses. ``ready``:
    the Ready condition's status, None for no Ready condition at all.
    ``deleting`` sets ``metadata.deletionTimestamp``. ``uid`` defaults to a
    uuid5 of the name. ``bulk`` > 0 pads the node to about that many bytes of
    JSON with realistic noise (labels, annotations, managedFields, images).
    """
    pairs = [("InternalIP", ip), ("Hostname", name)] if isinstance(ip, str) else list(ip or [])
    meta: JSON = {
        "name": name,
        "uid": uid or str(uuid.uuid5(uuid.NAMESPACE_DNS, f"node.{name}")),
        "creationTimestamp": created,
        "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **(labels or {})},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-02T00:00:00Z"
        meta["deletionGracePeriodSeconds"] = 0
    conditions: list[JSON] = []
    if ready is not None:
        for kind, reason in (
            ("MemoryPressure", "KubeletHasSufficientMemory"),
            ("DiskPressure", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "KubeletHasSufficientPID"),
        ):
            conditions.append(_condition(kind, "False", reason))
        ready_reason = {"True": "KubeletReady", "False": "KubeletNotReady"}.get(ready, "NodeStatusUnknown")
        conditions.append(_condition("Ready", ready, ready_reason))
    status: JSON = {
        "capacity": {"cpu": "8", "memory": "32856704Ki", "pods": "110", "ephemeral-storage": "101430960Ki"},
        "allocatable": {"cpu": "7910m", "memory": "29530240Ki", "pods": "110"},
        "conditions": conditions,
    }
    if pairs:
        status["addresses"] = [{"type": kind, "address": address} for kind, address in pairs]
    status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": 10250}}
    status["nodeInfo"] = {
        "machineID": hashlib.md5(name.encode()).hexdigest(),
        "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"system.{name}")),
        "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"boot.{name}")),
        "kernelVersion": "6.1.0-18-cloud-amd64",
        "osImage": "Debian GNU/Linux 12 (bookworm)",
        "containerRuntimeVersion": "containerd://1.7.13",
        "kubeletVersion": "v1.31.4",
        "kubeProxyVersion": "v1.31.4",
        "operatingSystem": "linux",
        "architecture": "amd64",
    }
    node: JSON = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": meta,
        "spec": {"providerID": f"fake://{name}"},
        "status": status,
    }
    if bulk > 0:
        _pad_node(node, bulk)
    return node


def _condition(kind: str, status: str, reason: str) -> JSON:
    return {
        "type": kind,
        "status": status,
        "lastHeartbeatTime": "2026-01-01T00:05:00Z",
        "lastTransitionTime": "2026-01-01T00:00:30Z",
        "reason": reason,
        "message": f"kubelet condition {kind} is {status}",
    }


def _pad_node(node: JSON, bulk: int) -> None:
    name = node["metadata"]["name"]
    digest = hashlib.sha256(name.encode()).hexdigest()
    zone = "abc"[int(digest[:2], 16) % 3]
    node["metadata"]["labels"].update(
        {
            "beta.kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "m5.2xlarge",
            "topology.kubernetes.io/region": "eu-west-1",
            "topology.kubernetes.io/zone": f"eu-west-1{zone}",
            "node-role.kubernetes.io/worker": "",
        }
    )
    node["metadata"]["annotations"] = {
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
        "csi.volume.kubernetes.io/nodeid": json.dumps({"ebs.csi.aws.com": f"i-{digest[:17]}"}),
        "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
        "projectcalico.org/IPv4Address": f"10.{int(digest[2:4], 16)}.{int(digest[4:6], 16)}.1/16",
    }
    conditions: JSON = {
        f'k:{{"type":"{cond["type"]}"}}': {
            ".": {},
            "f:lastHeartbeatTime": {},
            "f:lastTransitionTime": {},
            "f:message": {},
            "f:reason": {},
            "f:status": {},
            "f:type": {},
        }
        for cond in node["status"]["conditions"]
    }
    node["metadata"]["managedFields"] = [
        {
            "manager": "kubelet",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2026-01-01T00:05:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:annotations": {".": {}, "f:node.alpha.kubernetes.io/ttl": {}}},
                "f:status": {
                    "f:conditions": conditions,
                    "f:images": {},
                    "f:nodeInfo": {"f:bootID": {}, "f:kubeletVersion": {}},
                    "f:allocatable": {"f:cpu": {}, "f:memory": {}, "f:pods": {}},
                },
            },
            "subresource": "status",
        },
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2026-01-01T00:01:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:podCIDR": {}, "f:podCIDRs": {".": {}, 'v:"10.244.0.0/24"': {}}}},
        },
    ]
    size = len(dumps(node))
    images: list[JSON] = []
    pool = _image_pool()
    index = 0
    while size < bulk:
        entry, length = pool[index % len(pool)]
        images.append({"names": list(entry["names"]), "sizeBytes": entry["sizeBytes"]})
        size += length
        index += 1
    node["status"]["images"] = images


@functools.cache
def _image_pool() -> tuple[tuple[JSON, int], ...]:
    pool = []
    for i in range(4000):
        repo = f"registry.example.com/team-{i % 40}/service-{i}"
        digest = hashlib.sha256(repo.encode()).hexdigest()
        entry = {
            "names": [f"{repo}@sha256:{digest}", f"{repo}:v1.{i % 30}.{i % 7}"],
            "sizeBytes": 10_000_000 + (i * 7919) % 900_000_000,
        }
        pool.append((entry, len(dumps(entry)) + 1))
    return tuple(pool)
