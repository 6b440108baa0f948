"""A fake Kubernetes API server over real HTTP, faithful where the reconciler cares.

Used in-process by the integration tests, the fault soak and the benchmark,
and as a separate process by ``make run``::

    python tests/fakeapi.py --port 0 --state STATE.json --kubeconfig OUT --ready-file F

What it serves (stdlib only, HTTP/1.1 keep-alive on 127.0.0.1):

* ``/api/v1/nodes``: paged lists from a consistent snapshot (continue tokens
  name the snapshot and the offset; :meth:`FakeApiServer.expire_continue_tokens`
  or age makes them answer 410 Expired), full label-selector syntax. Each node
  is kept pre-serialised, so a page of 500 nodes of 20 KB is one bytes join.
* Services, Endpoints and EndpointSlices: GET, list by label selector,
  DELETE (dry run, preconditions) and server-side apply (field ownership in
  ``managedFields``, conflicts, forced transfer, pruning of fields the applier
  dropped, ``resourceVersion`` preconditions, dry run, defaulting, and the
  validation rules of the real API server that the reconciler can trip).
* Faults on demand (:meth:`FakeApiServer.inject`): error statuses with
  ``Retry-After``, hangs, dropped connections, raw or truncated bodies.
  A fault is decided before any state is touched, so it never changes state.
* Bearer-token authentication (401) and RBAC denials (:meth:`FakeApiServer.forbid`, 403).

Every request is recorded in :attr:`FakeApiServer.requests`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import copy
import functools
import hashlib
import ipaddress
import json
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

JSON = dict[str, Any]
FieldPath = tuple[str, ...]

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
#: API server limits (k8s.io/api validation) the reconciler must respect.
MAX_SLICE_ENDPOINTS = 1000
MAX_SLICE_PORTS = 100
MAX_ENDPOINT_ADDRESSES = 100
MAX_ENDPOINTS_ADDRESSES = 1000

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

_MISSING: Any = object()


def reason_for(status: int) -> str:
    """The Kubernetes ``reason`` of a Status with this HTTP code."""
    if status in _REASONS:
        return _REASONS[status]
    try:
        return HTTPStatus(status).phrase.replace(" ", "")
    except ValueError:
        return "Unknown"


def status_body(code: int, message: str, reason: str | None = None, details: JSON | None = None) -> JSON:
    """A ``kind: Status`` failure document, as the API server sends with every error."""
    doc: JSON = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason if reason is not None else reason_for(code),
    }
    if details:
        doc["details"] = details
    doc["code"] = code
    return doc


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeApiError(Exception):
    """An API error: the HTTP status and the Status document to answer with."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: JSON | None = None
    ) -> None:
        super().__init__(f"{code} {reason or reason_for(code)}: {message}")
        self.code = code
        self.reason = reason or reason_for(code)
        self.message = message
        self.details = details

    def status(self) -> JSON:
        """The ``kind: Status`` body."""
        return status_body(self.code, self.message, self.reason, self.details)


# --- names and labels (k8s.io/apimachinery/pkg/util/validation) ------------------

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def is_dns_subdomain(value: Any) -> bool:
    """A DNS-1123 subdomain (object names, node names)."""
    return isinstance(value, str) and len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.fullmatch(value))


def is_dns_label(value: Any) -> bool:
    """A DNS-1123 label (port names, namespaces)."""
    return isinstance(value, str) and len(value) <= 63 and bool(_DNS1123_LABEL.fullmatch(value))


def is_dns1035_label(value: Any) -> bool:
    """A DNS-1035 label (Service names: must start with a letter)."""
    return isinstance(value, str) and len(value) <= 63 and bool(_DNS1035_LABEL.fullmatch(value))


def is_qualified_name(value: Any) -> bool:
    """A label or annotation key: ``[prefix/]name``."""
    if not isinstance(value, str):
        return False
    prefix, _, name = value.rpartition("/")
    if "/" in value and not is_dns_subdomain(prefix):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.fullmatch(name))


def is_label_value(value: Any) -> bool:
    """A label value: empty, or up to 63 alphanumerics with ``-_.`` inside."""
    return isinstance(value, str) and (
        value == "" or (len(value) <= 63 and bool(_LABEL_NAME.fullmatch(value)))
    )


# --- label selectors (k8s.io/apimachinery/pkg/labels) ----------------------------


class SelectorError(ValueError):
    """A label selector that does not parse."""


@dataclass(frozen=True, slots=True)
class Requirement:
    """One requirement of a label selector; ``op`` is exists ! = != in notin gt lt."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a label set satisfies this requirement."""
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op == "=":
            return has and value == self.values[0]
        if self.op == "!=":
            return not has or value != self.values[0]
        if self.op == "in":
            return has and value in self.values
        if self.op == "notin":
            return not has or value not in self.values
        try:
            number = int(value or "")
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == "gt" else number < bound


_SEL_TOKEN = re.compile(r"\s*(?:(==|!=|=|!|\(|\)|,|<|>)|([^\s=!(),<>]+))")


def parse_selector(text: str) -> list[Requirement]:
    """Parse a label selector in full Kubernetes syntax; raise :class:`SelectorError`.

    ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``,
    ``k>1``, ``k<1``; a comma is AND. The empty selector matches everything.
    """
    tokens: list[tuple[str, str]] = []  # ("op", text) or ("id", text)
    pos = 0
    while True:
        match = _SEL_TOKEN.match(text, pos)
        if not match:
            break
        pos = match.end()
        tokens.append(("op", match[1]) if match[1] else ("id", match[2]))
    index = 0

    def take() -> tuple[str, str] | None:
        nonlocal index
        if index >= len(tokens):
            return None
        index += 1
        return tokens[index - 1]

    def peek() -> tuple[str, str] | None:
        return tokens[index] if index < len(tokens) else None

    def key_of(token: tuple[str, str] | None) -> str:
        if token is None or token[0] != "id":
            raise SelectorError(f"found {_show(token)}, expected: identifier")
        if not is_qualified_name(token[1]):
            raise SelectorError(f"invalid label key {token[1]!r}: must be a qualified name")
        return token[1]

    def value_of(raw: str) -> str:
        if not is_label_value(raw):
            raise SelectorError(f"invalid label value {raw!r}: must be a valid label value")
        return raw

    requirements: list[Requirement] = []
    if not tokens:
        return requirements
    while True:
        token = take()
        if token == ("op", "!"):
            requirements.append(Requirement(key_of(take()), "!"))
        else:
            key = key_of(token)
            nxt = peek()
            if nxt is None or nxt == ("op", ","):
                requirements.append(Requirement(key, "exists"))
            elif nxt[0] == "op" and nxt[1] in ("=", "==", "!="):
                take()
                raw = ""
                following = peek()
                if following is not None and following[0] == "id":
                    raw = following[1]
                    take()
                requirements.append(Requirement(key, "!=" if nxt[1] == "!=" else "=", (value_of(raw),)))
            elif nxt in (("op", ">"), ("op", "<")):
                take()
                bound = take()
                if bound is None or bound[0] != "id" or not re.fullmatch(r"-?[0-9]+", bound[1]):
                    raise SelectorError(
                        f"for 'gt', 'lt' operators, exactly one integer value is required for {key}"
                    )
                requirements.append(Requirement(key, "gt" if nxt[1] == ">" else "lt", (bound[1],)))
            elif nxt in (("id", "in"), ("id", "notin")):
                take()
                if take() != ("op", "("):
                    raise SelectorError(f"expected '(' after {nxt[1]} for key {key}")
                values: list[str] = []
                while True:
                    item = take()
                    if item is not None and item[0] == "id":
                        values.append(value_of(item[1]))
                        sep = take()
                        if sep == ("op", ")"):
                            break
                        if sep != ("op", ","):
                            raise SelectorError(f"found {_show(sep)}, expected: ',' or ')'")
                    elif item == ("op", ")") and not values:
                        raise SelectorError("for 'in', 'notin' operators, values set can't be empty")
                    else:
                        raise SelectorError(f"found {_show(item)}, expected: value")
                requirements.append(Requirement(key, nxt[1], tuple(values)))
            else:
                raise SelectorError(f"found {_show(nxt)}, expected: in, notin, =, ==, !=, gt, lt")
        sep = take()
        if sep is None:
            return requirements
        if sep != ("op", ","):
            raise SelectorError(f"found {_show(sep)}, expected: ','")


def _show(token: tuple[str, str] | None) -> str:
    return "end of string" if token is None else repr(token[1])


def selector_matches(requirements: Iterable[Requirement], labels: Mapping[str, str]) -> bool:
    """Whether a label set satisfies every requirement (AND)."""
    return all(req.matches(labels) for req in requirements)


# --- nodes -----------------------------------------------------------------------


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
    size = len(_dumps(node))
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
        pool.append((entry, len(_dumps(entry)) + 1))
    return tuple(pool)


# --- the request log and faults ---------------------------------------------------


@dataclass
class Request:
    """One entry of the request log."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: bytes
    status: int  # the status actually answered; 0 for a dropped connection
    injected: bool  # a fault (including a mere hang) was applied
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    status: int | None
    retry_after: str | None
    hang: float | None
    drop: bool
    body: bytes | None
    truncate: bool
    times: int
    query: dict[str, str | bool]
    after: int
    seen: int = 0
    fired: int = 0

    def matches(self, method: str, path: str, query: Mapping[str, str]) -> bool:
        if self.method not in ("*", method) or not self.path.fullmatch(path):
            return False
        for key, want in self.query.items():
            if want is True:
                if key not in query:
                    return False
            elif want is False:
                if key in query:
                    return False
            elif query.get(key) != want:
                return False
        return True


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def _error_reply(exc: FakeApiError) -> _Reply:
    return _Reply(exc.code, _dumps(exc.status()))


# --- kinds and stored objects -------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    kind: str
    api_version: str
    plural: str
    prefix: str  # REST path prefix

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


_KINDS = {
    k.kind: k
    for k in (
        _Kind("Service", "v1", "services", "/api/v1"),
        _Kind("Endpoints", "v1", "endpoints", "/api/v1"),
        _Kind("EndpointSlice", "discovery.k8s.io/v1", "endpointslices", "/apis/discovery.k8s.io/v1"),
    )
}
_ROUTES = {(k.prefix, k.plural): k for k in _KINDS.values()}
_NS_PATH = re.compile(r"(/api/v1|/apis/discovery\.k8s\.io/v1)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?")
_NODE_PATH = re.compile(r"/api/v1/nodes/([^/]+)")


def _kind_of(name: str) -> _Kind:
    for kind in _KINDS.values():
        if name in (kind.kind, kind.plural, kind.kind.lower()):
            return kind
    raise ValueError(f"unknown kind {name!r}: one of {', '.join(_KINDS)} (or Node)")


@dataclass(frozen=True)
class _Owner:
    manager: str
    operation: str
    api_version: str
    time: str
    paths: frozenset[FieldPath]
    subresource: str = ""


@dataclass
class _Stored:
    obj: JSON  # without metadata.managedFields
    owners: dict[tuple[str, str], _Owner]  # (manager, operation) -> entry, in managedFields order


@dataclass(frozen=True, eq=False, slots=True)
class _Item:
    """A list item, pre-serialised."""

    name: str
    labels: dict[str, str]
    data: bytes


@dataclass(frozen=True, eq=False)
class _Snapshot:
    ident: int
    rv: int
    created: float
    what: str
    items: tuple[_Item, ...]


# --- server-side apply helpers ------------------------------------------------------

_UNOWNED_META = {
    "name",
    "namespace",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
}


def _owned_part(doc: JSON, kind: _Kind) -> JSON:
    """The part of an apply body whose leaves become owned fields."""
    out = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    if kind.kind == "Service":
        out.pop("status", None)  # the status subresource: ignored on the main resource
    meta = {k: v for k, v in (doc.get("metadata") or {}).items() if k not in _UNOWNED_META}
    if meta:
        out = {"metadata": meta, **out}
    return out


def leaf_paths(value: Any, prefix: FieldPath = ()) -> Iterator[tuple[FieldPath, Any]]:
    """(path, value) of every leaf: maps recurse, lists and scalars are leaves, ``{}`` too."""
    if isinstance(value, dict) and (value or not prefix):
        for key, child in value.items():
            yield from leaf_paths(child, (*prefix, str(key)))
    else:
        yield prefix, value


def fields_v1(paths: Iterable[FieldPath]) -> JSON:
    """The nested ``f:`` FieldsV1 form of a set of paths (a leaf is ``{}``)."""
    root: JSON = {}
    for path in sorted(paths):
        node = root
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return root


def paths_from_fields_v1(fields: Mapping[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    """The paths of a FieldsV1 document; list element keys (``k:``, ``v:``, ``i:``) own the whole list."""
    out: set[FieldPath] = set()
    for key, sub in fields.items():
        if not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        sub = sub if isinstance(sub, Mapping) else {}
        if any(k.startswith("f:") for k in sub):
            out |= paths_from_fields_v1(sub, path)
        else:
            out.add(path)
    return out


def _get(obj: Any, path: FieldPath) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _set(obj: JSON, path: FieldPath, value: Any) -> None:
    for key in path[:-1]:
        child = obj.get(key)
        if not isinstance(child, dict):
            child = obj[key] = {}
        obj = child
    if isinstance(value, dict) and not value and isinstance(obj.get(path[-1]), dict):
        return  # owning an empty map keeps the keys others put in it
    obj[path[-1]] = copy.deepcopy(value)


def _delete(obj: JSON, path: FieldPath, kept: Callable[[FieldPath], bool]) -> None:
    """Remove a field, then the parent maps it leaves empty (unless someone owns them)."""
    parents: list[JSON] = []
    node: Any = obj
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return
        parents.append(node)
        node = node[key]
    if not isinstance(node, dict):
        return
    node.pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):
        parent_path = path[:depth]
        container = parents[depth - 1]
        value = container.get(path[depth - 1])
        if parent_path == ("metadata",) or value != {} or kept(parent_path):
            return
        del container[path[depth - 1]]


def _has_empty(value: Any) -> bool:
    if isinstance(value, dict):
        return not value or any(_has_empty(v) for v in value.values())
    if isinstance(value, list):
        return not value or any(_has_empty(v) for v in value)
    return False


def _conflicts_at(q: FieldPath, applied: Mapping[FieldPath, Any], old: JSON, new: JSON) -> bool:
    """Whether this apply changes a field ``q`` another manager owns."""
    for p in applied:
        if p == q:
            before = _get(old, q)
            if isinstance(applied[p], dict) and isinstance(before, dict):
                continue  # co-owning a map's existence is never a conflict
            if before != _get(new, q):
                return True
        elif p[: len(q)] == q:  # q holds p: only a problem if q is not a map
            if not isinstance(_get(old, q), dict):
                return True
        elif q[: len(p)] == p and _get(old, q) != _get(new, q):
            return True
    return False


def _field_text(path: FieldPath) -> str:
    return "." + ".".join(path)


# --- validation (k8s.io/kubernetes/pkg/apis/*/validation) ----------------------------


def _invalid_value(where: str, value: Any, detail: str) -> str:
    return f"{where}: Invalid value: {json.dumps(value)}: {detail}"


def _ip_problem(value: Any, version: int | None) -> str | None:
    """Why an endpoint IP is unacceptable, or None."""
    if not isinstance(value, str) or "%" in value:
        return "must be a valid IP address"
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return "must be a valid IP address"
    if version is not None and ip.version != version:
        return f"must be an IPv{version} address"
    if ip.is_unspecified:
        return "may not be unspecified (0.0.0.0, ::)"
    if ip.is_loopback:
        return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    if ip.is_link_local:
        return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    if ip.is_multicast:
        return "may not be in the multicast range (224.0.0.0/4, ff00::/8)"
    return None


def _check_port(errors: list[str], where: str, value: Any, *, required: bool = True) -> None:
    if value is None:
        if required:
            errors.append(f"{where}: Required value")
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        errors.append(_invalid_value(where, value, "must be between 1 and 65535, inclusive"))


def _check_protocol(errors: list[str], where: str, value: Any) -> None:
    if value not in ("TCP", "UDP", "SCTP"):
        errors.append(
            f'{where}: Unsupported value: {json.dumps(value)}: supported values: "SCTP", "TCP", "UDP"'
        )


def _check_ports(errors: list[str], where: str, ports: Any, *, need_names: bool, port_required: bool) -> None:
    if ports is None:
        return
    if not isinstance(ports, list):
        errors.append(_invalid_value(where, ports, "must be a list"))
        return
    names: set[str] = set()
    for i, port in enumerate(ports):
        at = f"{where}[{i}]"
        if not isinstance(port, dict):
            errors.append(_invalid_value(at, port, "must be an object"))
            continue
        name = port.get("name")
        if name in (None, ""):
            if need_names and len(ports) > 1:
                errors.append(f"{at}.name: Required value")
        elif not is_dns_label(name):
            errors.append(_invalid_value(f"{at}.name", name, "must be a DNS-1123 label"))
        elif name in names:
            errors.append(f"{at}.name: Duplicate value: {json.dumps(name)}")
        else:
            names.add(name)
        _check_port(errors, f"{at}.port", port.get("port"), required=port_required)
        _check_protocol(errors, f"{at}.protocol", port.get("protocol", "TCP"))


def _check_target_ref(errors: list[str], where: str, ref: Any) -> None:
    if ref is not None and not isinstance(ref, dict):
        errors.append(_invalid_value(where, ref, "must be an object"))


def _check_metadata(errors: list[str], kind: _Kind, meta: JSON) -> None:
    name = meta.get("name")
    if kind.kind == "Service":
        if not is_dns1035_label(name):
            errors.append(
                _invalid_value(
                    "metadata.name",
                    name,
                    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                    "start with an alphabetic character, and end with an alphanumeric character",
                )
            )
    elif not is_dns_subdomain(name):
        errors.append(
            _invalid_value(
                "metadata.name",
                name,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character",
            )
        )
    labels = meta.get("labels", {})
    if not isinstance(labels, dict):
        errors.append(_invalid_value("metadata.labels", labels, "must be a map of strings"))
    else:
        for key, value in labels.items():
            if not is_qualified_name(key):
                errors.append(_invalid_value("metadata.labels", key, "name part must be a qualified name"))
            if not is_label_value(value):
                errors.append(
                    _invalid_value(
                        f"metadata.labels.{key}", value, "a valid label must be 63 characters or less"
                    )
                )
    annotations = meta.get("annotations", {})
    if not isinstance(annotations, dict):
        errors.append(_invalid_value("metadata.annotations", annotations, "must be a map of strings"))
    else:
        for key, value in annotations.items():
            if not is_qualified_name(key):
                errors.append(
                    _invalid_value("metadata.annotations", key, "name part must be a qualified name")
                )
            if not isinstance(value, str):
                errors.append(_invalid_value(f"metadata.annotations.{key}", value, "must be a string"))
    refs = meta.get("ownerReferences", [])
    if not isinstance(refs, list):
        errors.append(_invalid_value("metadata.ownerReferences", refs, "must be a list"))
        return
    controllers = 0
    for i, ref in enumerate(refs):
        at = f"metadata.ownerReferences[{i}]"
        if not isinstance(ref, dict):
            errors.append(_invalid_value(at, ref, "must be an object"))
            continue
        for key in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(key):
                errors.append(f"{at}.{key}: Required value: {key} must not be empty")
        if ref.get("controller") is True:
            controllers += 1
    if controllers > 1:
        errors.append(
            "metadata.ownerReferences: Invalid value: only one reference can have Controller set to true"
        )


def _check_service(errors: list[str], obj: JSON) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errors.append("spec: Required value")
        return
    kind = spec.get("type", "ClusterIP")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errors.append(
            f"spec.type: Unsupported value: {json.dumps(kind)}: supported values: "
            '"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"'
        )
    cluster_ip = spec.get("clusterIP")
    if cluster_ip not in (None, "", "None") and _ip_problem(cluster_ip, None):
        errors.append(
            _invalid_value("spec.clusterIP", cluster_ip, "must be empty, 'None', or a valid IP address")
        )
    ports = spec.get("ports")
    if not ports and cluster_ip != "None" and kind != "ExternalName":
        errors.append("spec.ports: Required value")
    _check_ports(errors, "spec.ports", ports, need_names=True, port_required=True)
    for i, port in enumerate(ports if isinstance(ports, list) else []):
        target = port.get("targetPort") if isinstance(port, dict) else None
        if target is None:
            continue
        if isinstance(target, str):
            if not (
                len(target) <= 15
                and _IANA_SVC_NAME.fullmatch(target)
                and "--" not in target
                and re.search("[a-z]", target)
            ):
                errors.append(
                    _invalid_value(f"spec.ports[{i}].targetPort", target, "must be an IANA_SVC_NAME")
                )
        else:
            _check_port(errors, f"spec.ports[{i}].targetPort", target)
    selector = spec.get("selector")
    if selector is not None and not (
        isinstance(selector, dict) and all(is_label_value(v) for v in selector.values())
    ):
        errors.append(_invalid_value("spec.selector", selector, "must be a map of label values"))


def _check_endpoints(errors: list[str], obj: JSON) -> None:
    subsets = obj.get("subsets")
    if subsets is None:
        return
    if not isinstance(subsets, list):
        errors.append(_invalid_value("subsets", subsets, "must be a list"))
        return
    total = 0
    for i, subset in enumerate(subsets):
        at = f"subsets[{i}]"
        if not isinstance(subset, dict):
            errors.append(_invalid_value(at, subset, "must be an object"))
            continue
        if not subset.get("addresses") and not subset.get("notReadyAddresses"):
            errors.append(f"{at}: Required value: must specify `addresses` or `notReadyAddresses`")
        for list_name in ("addresses", "notReadyAddresses"):
            addresses = subset.get(list_name) or []
            if not isinstance(addresses, list):
                errors.append(_invalid_value(f"{at}.{list_name}", addresses, "must be a list"))
                continue
            total += len(addresses)
            for j, address in enumerate(addresses):
                where = f"{at}.{list_name}[{j}]"
                if not isinstance(address, dict):
                    errors.append(_invalid_value(where, address, "must be an object"))
                    continue
                problem = _ip_problem(address.get("ip"), None)
                if problem:
                    errors.append(_invalid_value(f"{where}.ip", address.get("ip"), problem))
                node_name = address.get("nodeName")
                if node_name is not None and not is_dns_subdomain(node_name):
                    errors.append(_invalid_value(f"{where}.nodeName", node_name, "must be a DNS subdomain"))
                _check_target_ref(errors, f"{where}.targetRef", address.get("targetRef"))
        _check_ports(errors, f"{at}.ports", subset.get("ports"), need_names=True, port_required=True)
    if total > MAX_ENDPOINTS_ADDRESSES:
        # The real API server accepts this; the fake refuses it so a reconciler
        # that forgets to truncate (SPEC: first 1000 + over-capacity) is caught.
        errors.append(f"subsets: Too many: {total}: must have at most {MAX_ENDPOINTS_ADDRESSES} addresses")


def _check_endpoint_slice(errors: list[str], obj: JSON) -> None:
    family = obj.get("addressType")
    if family is None:
        errors.append("addressType: Required value")
    elif family not in ("IPv4", "IPv6", "FQDN"):
        errors.append(
            f'addressType: Unsupported value: {json.dumps(family)}: supported values: "FQDN", "IPv4", "IPv6"'
        )
    version = {"IPv4": 4, "IPv6": 6}.get(family) if isinstance(family, str) else None
    endpoints = obj.get("endpoints")
    if endpoints is not None and not isinstance(endpoints, list):
        errors.append(_invalid_value("endpoints", endpoints, "must be a list"))
        endpoints = None
    endpoints = endpoints or []
    if len(endpoints) > MAX_SLICE_ENDPOINTS:
        errors.append(f"endpoints: Too many: {len(endpoints)}: must have at most {MAX_SLICE_ENDPOINTS} items")
    for i, endpoint in enumerate(endpoints):
        at = f"endpoints[{i}]"
        if not isinstance(endpoint, dict):
            errors.append(_invalid_value(at, endpoint, "must be an object"))
            continue
        addresses = endpoint.get("addresses")
        if not isinstance(addresses, list) or not addresses:
            errors.append(f"{at}.addresses: Required value: must contain at least 1 address")
            addresses = []
        elif len(addresses) > MAX_ENDPOINT_ADDRESSES:
            errors.append(
                f"{at}.addresses: Too many: {len(addresses)}: "
                f"must have at most {MAX_ENDPOINT_ADDRESSES} items"
            )
        for j, address in enumerate(addresses):
            if family == "FQDN":
                problem = None if is_dns_subdomain(address) else "must be a DNS subdomain"
            elif version is not None:
                problem = _ip_problem(address, version)
            else:
                problem = None
            if problem:
                errors.append(_invalid_value(f"{at}.addresses[{j}]", address, problem))
        conditions = endpoint.get("conditions", {})
        if not isinstance(conditions, dict):
            errors.append(_invalid_value(f"{at}.conditions", conditions, "must be an object"))
        else:
            for key, value in conditions.items():
                if value is not None and not isinstance(value, bool):
                    errors.append(_invalid_value(f"{at}.conditions.{key}", value, "must be a boolean"))
        node_name = endpoint.get("nodeName")
        if node_name is not None and not is_dns_subdomain(node_name):
            errors.append(_invalid_value(f"{at}.nodeName", node_name, "must be a DNS subdomain"))
        hostname = endpoint.get("hostname")
        if hostname is not None and not is_dns_label(hostname):
            errors.append(_invalid_value(f"{at}.hostname", hostname, "must be a DNS-1123 label"))
        _check_target_ref(errors, f"{at}.targetRef", endpoint.get("targetRef"))
    ports = obj.get("ports")
    if isinstance(ports, list) and len(ports) > MAX_SLICE_PORTS:
        errors.append(f"ports: Too many: {len(ports)}: must have at most {MAX_SLICE_PORTS} items")
    _check_ports(errors, "ports", ports, need_names=False, port_required=False)


def validate(kind_name: str, obj: JSON) -> list[str]:
    """The validation errors of a whole object (empty when valid), as the API server words them."""
    kind = _kind_of(kind_name)
    errors: list[str] = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return ["metadata: Required value"]
    _check_metadata(errors, kind, meta)
    if kind.kind == "Service":
        _check_service(errors, obj)
    elif kind.kind == "Endpoints":
        _check_endpoints(errors, obj)
    else:
        _check_endpoint_slice(errors, obj)
    return errors


# --- the server ---------------------------------------------------------------------


class FakeApiServer:
    """A fake API server on 127.0.0.1: cluster state, faults, request log, HTTP.

    All state sits behind one lock; requests are served by daemon threads.
    """

    #: A continue token older than this many seconds answers 410 Expired.
    continue_ttl: float = 300.0
    #: At most this many list snapshots are kept; older tokens answer 410.
    max_snapshots: int = 64
    #: Mimic kube-apiserver: an apply whose body holds an empty map or list
    #: re-stamps managedFields and bumps resourceVersion even when nothing
    #: else changed (SPEC "Objects written"), so such bodies show up as writes.
    restamp_on_empty: bool = True

    def __init__(
        self,
        *,
        page_cap: int | None = None,
        token: str = "fake-token",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.page_cap = page_cap
        self.token = token
        self.host = host
        self.port = port
        self.url = ""
        self.requests: list[Request] = []
        #: Requests to unknown paths or with unsupported methods (404/405 from routing).
        self.unhandled: list[Request] = []
        #: Tracebacks of bugs in the fake itself (answered 500 InternalError).
        self.errors: list[str] = []
        #: Called with each logged request (e.g. to print it in ``make run``).
        self.on_request: Callable[[Request], None] | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._rv = 1000
        self._nodes: dict[str, _Item] = {}
        self._node_items: tuple[_Item, ...] | None = None
        self._objects: dict[tuple[str, str, str], _Stored] = {}
        self._snapshots: OrderedDict[int, _Snapshot] = OrderedDict()
        self._next_snapshot = 1
        self._expired_below = 0
        self._faults: list[_Fault] = []
        self._forbidden: list[tuple[str, re.Pattern[str]]] = []
        self._next_cluster_ip = 10
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> FakeApiServer:
        """Listen and serve in a daemon thread; sets :attr:`url`."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HttpServer((self.host, self.port), self)
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        # A short poll interval makes stop() quick: shutdown() waits for the next poll.
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, name="fakeapi", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: end hangs, close every open connection, release the port."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def write_kubeconfig(
        self,
        path: str | os.PathLike[str],
        *,
        context: str = "fake",
        token: str | None = None,
        server: str | None = None,
    ) -> str:
        """Write a kubeconfig (JSON, which is YAML) pointing at this server; return its path."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": server or self.url}}],
            "users": [{"name": context, "user": {"token": self.token if token is None else token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            "current-context": context,
        }
        with open(path, "w", encoding="utf-8") as out:
            json.dump(config, out, indent=2)
            out.write("\n")
        return os.fspath(path)

    # --- cluster state ----------------------------------------------------------

    def _node_item(self, node: Mapping[str, Any]) -> _Item:
        meta = dict(node.get("metadata") or {})
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("a node needs metadata.name")
        self._rv += 1
        meta.setdefault("uid", str(uuid.uuid5(uuid.NAMESPACE_DNS, f"node.{name}")))
        meta.setdefault("creationTimestamp", _now())
        meta["resourceVersion"] = str(self._rv)
        doc = {"apiVersion": "v1", "kind": "Node", **node, "metadata": meta}
        return _Item(name, dict(meta.get("labels") or {}), _dumps(doc))

    def set_nodes(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        """Replace all nodes (any iterable: a generator keeps the benchmark's memory flat)."""
        with self._lock:
            items: dict[str, _Item] = {}
            for node in nodes:
                item = self._node_item(node)
                items[item.name] = item
            self._nodes = items
            self._node_items = None

    def put_node(self, node: Mapping[str, Any]) -> None:
        """Create or replace one node."""
        with self._lock:
            item = self._node_item(node)
            self._nodes[item.name] = item
            self._node_items = None

    def delete_node(self, name: str) -> None:
        """Delete one node (KeyError if there is none)."""
        with self._lock:
            del self._nodes[name]
            self._rv += 1
            self._node_items = None

    def get_node(self, name: str) -> JSON | None:
        """A node as served (with its resourceVersion), or None."""
        with self._lock:
            item = self._nodes.get(name)
        return None if item is None else cast(JSON, json.loads(item.data))

    def node_names(self) -> list[str]:
        """The names of all nodes, sorted."""
        with self._lock:
            return sorted(self._nodes)

    def apply_as(
        self, manager: str, body: Mapping[str, Any], *, force: bool = True, dry_run: bool = False
    ) -> JSON:
        """Server-side apply ``body`` as ``manager`` through the HTTP code path.

        Returns the object as served; raises :class:`FakeApiError` as HTTP would answer.
        """
        doc = copy.deepcopy(dict(body))
        kind = _kind_of(str(doc.get("kind")))
        meta = doc.get("metadata") or {}
        _, result = self._apply(
            kind,
            str(meta.get("namespace") or "default"),
            str(meta.get("name") or ""),
            manager,
            doc,
            force=force,
            dry_run=dry_run,
        )
        return copy.deepcopy(result)

    def put_object(self, obj: Mapping[str, Any]) -> JSON:
        """Store an object as-is: no SSA, validation or defaults; uid/rv/creationTimestamp added if missing.

        ``metadata.managedFields`` given in FieldsV1 become the owners of the fields.
        Nodes (``kind: Node``) go to :meth:`put_node`.
        """
        if obj.get("kind") == "Node":
            self.put_node(obj)
            return cast(JSON, self.get_node(str(obj["metadata"]["name"])))
        doc = copy.deepcopy(dict(obj))
        kind = _kind_of(str(doc.get("kind")))
        doc.setdefault("apiVersion", kind.api_version)
        meta = doc.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ValueError("an object needs metadata.name")
        meta.setdefault("namespace", "default")
        owners: dict[tuple[str, str], _Owner] = {}
        for entry in meta.pop("managedFields", None) or []:
            owner = _Owner(
                manager=str(entry.get("manager", "")),
                operation=str(entry.get("operation", "Update")),
                api_version=str(entry.get("apiVersion", kind.api_version)),
                time=str(entry.get("time", _now())),
                paths=frozenset(paths_from_fields_v1(entry.get("fieldsV1") or {})),
                subresource=str(entry.get("subresource", "")),
            )
            owners[(owner.manager, owner.operation)] = owner
        with self._lock:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            if meta.get("resourceVersion"):
                meta["resourceVersion"] = str(meta["resourceVersion"])
                if meta["resourceVersion"].isdigit():
                    self._rv = max(self._rv, int(meta["resourceVersion"]))
            else:
                self._rv += 1
                meta["resourceVersion"] = str(self._rv)
            stored = _Stored(doc, owners)
            self._objects[(kind.kind, meta["namespace"], name)] = stored
            return copy.deepcopy(self._render(stored))

    def get_object(self, kind: str, namespace: str, name: str) -> JSON | None:
        """A deep copy of an object as GET would return it, or None."""
        if kind == "Node":
            return self.get_node(name)
        k = _kind_of(kind)
        with self._lock:
            stored = self._objects.get((k.kind, namespace, name))
            return None if stored is None else copy.deepcopy(self._render(stored))

    def objects(self, kind: str, namespace: str | None = None) -> list[JSON]:
        """Deep copies of all objects of a kind (in a namespace, or all), sorted by name."""
        k = _kind_of(kind)
        with self._lock:
            found = [
                copy.deepcopy(self._render(stored))
                for (kind_name, ns, _), stored in self._objects.items()
                if kind_name == k.kind and namespace in (None, ns)
            ]
        return sorted(found, key=lambda o: (o["metadata"]["name"], o["metadata"].get("namespace", "")))

    def expire_continue_tokens(self) -> None:
        """Every continue token issued so far now answers 410 Expired."""
        with self._lock:
            self._snapshots.clear()
            self._expired_below = self._next_snapshot

    @property
    def resource_version(self) -> int:
        """The global resourceVersion counter (bumped by every change)."""
        return self._rv

    # --- faults and RBAC ----------------------------------------------------------

    def inject(
        self,
        method: str,
        path: str,
        *,
        status: int | None = None,
        retry_after: str | None = None,
        hang: float | None = None,
        drop: bool = False,
        body: bytes | None = None,
        truncate: bool = False,
        times: int = 1,
        query: dict[str, str | bool] | None = None,
        after: int = 0,
    ) -> None:
        """Make matching requests fail (decided before any state is touched, so state never changes).

        ``method``: "*" or exact. ``path``: regex, full match on the request path.
        ``query``: each key must match (True: present, False: absent, str: equal).
        ``after`` matching requests pass first, then ``times`` fail (-1: forever).
        ``status``: answer it with a Status body (``Retry-After`` if given);
        ``body``: answer ``status`` (default 200) with these raw bytes;
        ``truncate``: declare a longer Content-Length than sent, then close;
        ``hang``: wait first (then the fault, or a normal answer if nothing else);
        ``drop``: close without any response.
        """
        if status is None and body is None and not truncate and not drop and hang is None:
            raise ValueError("inject needs one of status, body, truncate, drop, hang")
        fault = _Fault(
            method=method.upper() if method != "*" else "*",
            path=re.compile(path),
            status=status,
            retry_after=retry_after,
            hang=hang,
            drop=drop,
            body=body,
            truncate=truncate,
            times=times,
            query=dict(query or {}),
            after=after,
        )
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Remove every injected fault (not the :meth:`forbid` rules)."""
        with self._lock:
            self._faults.clear()

    def forbid(self, method: str, path: str) -> None:
        """Answer matching requests 403 Forbidden from now on (an RBAC denial)."""
        with self._lock:
            self._forbidden.append((method.upper() if method != "*" else "*", re.compile(path)))

    def clear_forbidden(self) -> None:
        """Remove every :meth:`forbid` rule."""
        with self._lock:
            self._forbidden.clear()

    def clear_log(self) -> None:
        """Empty the request log (and :attr:`unhandled`)."""
        with self._lock:
            self.requests.clear()
            self.unhandled.clear()

    def matching(self, method: str = "*", path: str = ".*") -> list[Request]:
        """Logged requests by method ("*" for any) and path regex (full match)."""
        pattern = re.compile(path)
        with self._lock:
            return [r for r in self.requests if method in ("*", r.method) and pattern.fullmatch(r.path)]

    def _take_fault(self, method: str, path: str, query: Mapping[str, str]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if not fault.matches(method, path, query):
                    continue
                if fault.seen < fault.after:
                    fault.seen += 1
                    continue
                if 0 <= fault.times <= fault.fired:
                    continue
                fault.fired += 1
                return fault
        return None

    def _log(self, request: Request, status: int, *, unhandled: bool = False) -> None:
        request.status = status
        with self._lock:
            self.requests.append(request)
            if unhandled:
                self.unhandled.append(request)
        callback = self.on_request
        if callback is not None:
            callback(request)

    # --- HTTP dispatch -------------------------------------------------------------

    def _respond(
        self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], body: bytes
    ) -> tuple[_Reply, bool]:
        """(reply, unhandled) for a request that no fault intercepted."""
        # The scheme is case-insensitive, as in kube-apiserver (the client's
        # in-cluster loader sends "bearer <token>").
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.token:
            return _error_reply(FakeApiError(401, "Unauthorized")), False
        with self._lock:
            forbidden = any(m in ("*", method) and p.fullmatch(path) for m, p in self._forbidden)
        if forbidden:
            verb = {"GET": "get", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())
            message = (
                f'User "system:serviceaccount:kube-system:fake" cannot {verb} {path}: '
                "RBAC: access denied (forbidden by the fake API server)"
            )
            return _error_reply(FakeApiError(403, message)), False
        try:
            return self._route(method, path, query, headers, body)
        except FakeApiError as exc:
            return _error_reply(exc), False
        except Exception as exc:  # a bug in the fake: answer like a real server would, and keep it
            self.errors.append(traceback.format_exc())
            return _error_reply(FakeApiError(500, f"fake API server bug: {exc!r}")), False

    def _route(
        self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], body: bytes
    ) -> tuple[_Reply, bool]:
        not_allowed = FakeApiError(405, "the server does not allow this method on the requested resource")
        if path == "/api/v1/nodes":
            if method != "GET":
                return _error_reply(not_allowed), True
            return self._list_nodes(query), False
        match = _NODE_PATH.fullmatch(path)
        if match:
            if method != "GET":
                return _error_reply(not_allowed), True
            with self._lock:
                item = self._nodes.get(match[1])
            if item is None:
                raise FakeApiError(
                    404, f'nodes "{match[1]}" not found', details={"name": match[1], "kind": "nodes"}
                )
            return _Reply(200, item.data), False
        if path == "/version" and method == "GET":
            version = {"major": "1", "minor": "31", "gitVersion": "v1.31.4-fake", "platform": "linux/amd64"}
            return _Reply(200, _dumps(version)), False
        match = _NS_PATH.fullmatch(path)
        kind = _ROUTES.get((match[1], match[3])) if match else None
        if match is None or kind is None:
            return _error_reply(FakeApiError(404, "the server could not find the requested resource")), True
        namespace, name = match[2], match[4]
        if name is None:
            if method != "GET":
                return _error_reply(not_allowed), True
            return self._list_objects(kind, namespace, query), False
        if method == "GET":
            with self._lock:
                stored = self._objects.get((kind.kind, namespace, name))
                if stored is None:
                    raise _not_found(kind, name)
                return _Reply(200, _dumps(self._render(stored))), False
        if method == "PATCH":
            return self._patch(kind, namespace, name, query, headers, body), False
        if method == "DELETE":
            return self._delete(kind, namespace, name, query, body), False
        return _error_reply(not_allowed), True

    # --- lists ---------------------------------------------------------------------

    def _list_nodes(self, query: Mapping[str, str]) -> _Reply:
        with self._lock:
            if self._node_items is None:
                self._node_items = tuple(sorted(self._nodes.values(), key=lambda item: item.name))
            items = self._node_items
        return self._page("nodes", "NodeList", "v1", items, query, cap=self.page_cap)

    def _list_objects(self, kind: _Kind, namespace: str, query: Mapping[str, str]) -> _Reply:
        with self._lock:
            found = sorted(
                (name, stored)
                for (kind_name, ns, name), stored in self._objects.items()
                if kind_name == kind.kind and ns == namespace
            )
            items = tuple(
                _Item(name, dict(stored.obj["metadata"].get("labels") or {}), _dumps(self._render(stored)))
                for name, stored in found
            )
        return self._page(
            f"{kind.plural}/{namespace}", f"{kind.kind}List", kind.api_version, items, query, cap=None
        )

    def _page(
        self,
        what: str,
        list_kind: str,
        api_version: str,
        items: tuple[_Item, ...],
        query: Mapping[str, str],
        *,
        cap: int | None,
    ) -> _Reply:
        try:
            requirements = parse_selector(query.get("labelSelector", ""))
        except SelectorError as exc:
            raise FakeApiError(400, f"unable to parse requirement: {exc}") from None
        raw_limit = query.get("limit", "")
        try:
            limit = int(raw_limit) if raw_limit else 0
        except ValueError:
            raise FakeApiError(400, f"limit: Invalid value: {raw_limit!r}: must be an integer") from None
        size = limit if limit > 0 else None
        if cap is not None:
            size = cap if size is None else min(size, cap)
        token = query.get("continue", "")
        with self._lock:
            if token:
                snapshot, offset = self._resolve_token(token, what)
            else:
                snapshot, offset = _Snapshot(0, self._rv, time.monotonic(), what, items), 0
        items = snapshot.items
        chosen: list[bytes] = []
        index = offset
        while index < len(items) and (size is None or len(chosen) < size):
            item = items[index]
            index += 1
            if not requirements or selector_matches(requirements, item.labels):
                chosen.append(item.data)
        more = any(selector_matches(requirements, item.labels) for item in items[index:])
        meta: JSON = {"resourceVersion": str(snapshot.rv)}
        if more:
            with self._lock:
                if snapshot.ident == 0:
                    snapshot = replace(snapshot, ident=self._next_snapshot)
                    self._next_snapshot += 1
                    self._snapshots[snapshot.ident] = snapshot
                    while len(self._snapshots) > self.max_snapshots:
                        self._snapshots.popitem(last=False)
            meta["continue"] = _encode_token(snapshot, index)
            if not requirements:
                meta["remainingItemCount"] = len(items) - index
        head = _dumps({"kind": list_kind, "apiVersion": api_version, "metadata": meta})
        return _Reply(200, b"".join((head[:-1], b',"items":[', b",".join(chosen), b"]}")))

    def _resolve_token(self, token: str, what: str) -> tuple[_Snapshot, int]:
        expired = FakeApiError(
            410,
            "The provided continue parameter is too old to display a consistent list result. "
            "You can start a new list without the continue parameter.",
            "Expired",
        )
        try:
            padded = token + "=" * (-len(token) % 4)
            doc = json.loads(base64.urlsafe_b64decode(padded.encode()))
            ident, offset, kind = int(doc["id"]), int(doc["off"]), str(doc["w"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise FakeApiError(400, f"continue key is not valid: {token[:60]!r}") from None
        if kind != what or offset < 0 or ident <= 0 or ident >= self._next_snapshot:
            raise FakeApiError(400, "continue key is not valid: it does not belong to this list")
        snapshot = self._snapshots.get(ident)
        if ident < self._expired_below or snapshot is None:
            raise expired
        if time.monotonic() - snapshot.created > self.continue_ttl:
            del self._snapshots[ident]
            raise expired
        return snapshot, offset

    # --- objects -------------------------------------------------------------------

    def _render(self, stored: _Stored) -> JSON:
        """The object as served; shares structure with the store (serialise or copy it at once)."""
        obj = dict(stored.obj)
        meta = dict(obj["metadata"])
        if stored.owners:
            entries = []
            for owner in stored.owners.values():
                entry: JSON = {
                    "manager": owner.manager,
                    "operation": owner.operation,
                    "apiVersion": owner.api_version,
                    "time": owner.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(owner.paths),
                }
                if owner.subresource:
                    entry["subresource"] = owner.subresource
                entries.append(entry)
            meta["managedFields"] = entries
        obj["metadata"] = meta
        return obj

    def _patch(
        self,
        kind: _Kind,
        namespace: str,
        name: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> _Reply:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != APPLY_CONTENT_TYPE:
            raise FakeApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{APPLY_CONTENT_TYPE} (got {content_type or 'none'!r}; "
                "this fake serves server-side apply only)",
            )
        manager = query.get("fieldManager", "")
        if not manager:
            raise FakeApiError(
                422,
                'PatchOptions.meta.k8s.io "" is invalid: '
                "fieldManager: Required value: is required for apply patch",
            )
        if len(manager) > 128:
            raise FakeApiError(422, "fieldManager: Too long: may not be longer than 128")
        force = query.get("force", "false")
        if force not in ("true", "false", "1", "0", "True", "False"):
            raise FakeApiError(400, f"force: Invalid value: {force!r}: must be a boolean")
        doc = _parse_body(body)
        status, result = self._apply(
            kind, namespace, name, manager, doc, force=force in ("true", "1", "True"), dry_run=_dry_run(query)
        )
        return _Reply(status, _dumps(result))

    def _apply(
        self,
        kind: _Kind,
        namespace: str,
        name: str,
        manager: str,
        doc: Any,
        *,
        force: bool,
        dry_run: bool,
    ) -> tuple[int, JSON]:
        """Server-side apply: (status, object as served). Raises :class:`FakeApiError`."""
        if not isinstance(doc, dict):
            raise FakeApiError(400, "the apply body must be a YAML or JSON object")
        if doc.get("apiVersion") != kind.api_version:
            raise FakeApiError(
                400,
                f"the API version in the data ({doc.get('apiVersion')}) does not match the expected "
                f"API version ({kind.api_version})",
            )
        if doc.get("kind") != kind.kind:
            raise FakeApiError(400, f"the kind in the data ({doc.get('kind')}) does not match {kind.kind}")
        meta = doc.get("metadata") if doc.get("metadata") is not None else {}
        if not isinstance(meta, dict):
            raise FakeApiError(400, "metadata must be an object")
        if meta.get("name") != name:
            raise FakeApiError(
                400,
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})",
            )
        if meta.get("namespace") not in (None, "", namespace):
            raise FakeApiError(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        if meta.get("managedFields"):
            raise FakeApiError(400, "metadata.managedFields must be nil")
        owned = _owned_part(doc, kind)
        applied = dict(leaf_paths(owned)) if owned else {}
        modified = FakeApiError(
            409,
            f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            details={"name": name, "group": kind.group, "kind": kind.plural},
        )
        with self._lock:
            key = (kind.kind, namespace, name)
            stored = self._objects.get(key)
            old = stored.obj if stored is not None else None
            want_rv = meta.get("resourceVersion")
            if want_rv not in (None, "") and (
                old is None or str(want_rv) != old["metadata"]["resourceVersion"]
            ):
                raise modified
            want_uid = meta.get("uid")
            if want_uid and old is not None and want_uid != old["metadata"].get("uid"):
                raise modified
            owners = dict(stored.owners) if stored is not None else {}
            if old is not None:
                base = copy.deepcopy(old)
            else:
                base = {
                    "apiVersion": kind.api_version,
                    "kind": kind.kind,
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "uid": str(uuid.uuid4()),
                        "creationTimestamp": _now(),
                    },
                }
            merged = copy.deepcopy(base)
            for path, value in applied.items():
                _set(merged, path, value)
            self._default(kind, merged)

            me = (manager, "Apply")
            conflicts = [
                (other, q)
                for other, owner in owners.items()
                if other != me
                for q in sorted(owner.paths)
                if _conflicts_at(q, applied, base, merged)
            ]
            if conflicts and not force:
                raise _conflict_error(conflicts, owners)
            lost: dict[tuple[str, str], set[FieldPath]] = {}
            for other, q in conflicts:
                lost.setdefault(other, set()).add(q)
            new_paths = frozenset(applied)
            new_owners: dict[tuple[str, str], _Owner] = {}
            mine = _Owner(manager, "Apply", kind.api_version, _now(), new_paths)
            for other, owner in owners.items():
                if other == me:
                    if new_paths:
                        new_owners[me] = mine
                    continue
                paths = owner.paths - lost.get(other, set())
                if paths:
                    new_owners[other] = owner if paths == owner.paths else replace(owner, paths=paths)
            if me not in owners and new_paths:
                new_owners[me] = mine

            remaining: set[FieldPath] = set()
            for owner in new_owners.values():
                remaining |= owner.paths
            previous = owners[me].paths if me in owners else frozenset()
            for path in sorted(previous - new_paths, key=len, reverse=True):
                if not self._held(path, remaining, merged):
                    _delete(merged, path, remaining.__contains__)
            self._default(kind, merged)
            if kind.kind == "Service" and old is not None:
                before, after = old.get("spec", {}).get("clusterIP"), merged.get("spec", {}).get("clusterIP")
                if before and before != after:
                    raise _invalid(
                        kind, name, [_invalid_value("spec.clusterIP", after, "field is immutable")]
                    )
            errors = validate(kind.kind, merged)
            if errors:
                raise _invalid(kind, name, errors)

            if stored is not None:
                old_sets = {k: o.paths for k, o in owners.items()}
                new_sets = {k: o.paths for k, o in new_owners.items()}
                quirk = self.restamp_on_empty and _has_empty(owned)
                if merged == old and old_sets == new_sets and not quirk:
                    return 200, self._render(stored)  # a no-op: same resourceVersion, same time stamps
            result = _Stored(merged, new_owners)
            code = 201 if old is None else 200
            if dry_run:
                if old is None:
                    merged["metadata"].pop("resourceVersion", None)
                return code, self._render(result)
            self._rv += 1
            merged["metadata"]["resourceVersion"] = str(self._rv)
            self._objects[key] = result
            return code, self._render(result)

    @staticmethod
    def _held(path: FieldPath, remaining: set[FieldPath], obj: JSON) -> bool:
        """Whether a field dropped by its applier must stay because someone else holds it."""
        for other in remaining:
            if other[: len(path)] == path:
                return True  # the same field, or one inside it
            if path[: len(other)] == other and not isinstance(_get(obj, other), dict):
                return True  # inside an atomic field someone owns
        return False

    def _default(self, kind: _Kind, obj: JSON) -> None:
        """Server-side defaults, owned by nobody (so clients must not compare naively)."""
        if kind.kind == "Service":
            spec = obj.setdefault("spec", {})
            if not isinstance(spec, dict):
                return
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec.get("type") != "ExternalName":
                if not spec.get("clusterIP"):
                    spec["clusterIP"] = f"10.96.{self._next_cluster_ip // 256}.{self._next_cluster_ip % 256}"
                    self._next_cluster_ip += 1
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
                family = "IPv6" if ":" in str(spec["clusterIP"]) else "IPv4"
                spec.setdefault("ipFamilies", [family])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
                spec.setdefault("internalTrafficPolicy", "Cluster")
            for port in spec.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
                    if "targetPort" not in port and "port" in port:
                        port["targetPort"] = port["port"]
            obj.setdefault("status", {"loadBalancer": {}})
        elif kind.kind == "Endpoints":
            for subset in obj.get("subsets") or []:
                for port in (subset.get("ports") or []) if isinstance(subset, dict) else []:
                    if isinstance(port, dict):
                        port.setdefault("protocol", "TCP")
        else:
            for port in obj.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")

    def _delete(
        self, kind: _Kind, namespace: str, name: str, query: Mapping[str, str], body: bytes
    ) -> _Reply:
        dry_run = _dry_run(query)
        options: Any = {}
        if body.strip():
            try:
                options = json.loads(body)
            except ValueError:
                raise FakeApiError(400, "the DeleteOptions body is not valid JSON") from None
            if not isinstance(options, dict):
                raise FakeApiError(400, "the DeleteOptions body must be an object")
            dry_run = dry_run or "All" in (options.get("dryRun") or [])
        preconditions = options.get("preconditions") or {}
        with self._lock:
            key = (kind.kind, namespace, name)
            stored = self._objects.get(key)
            if stored is None:
                raise _not_found(kind, name)
            meta = stored.obj["metadata"]
            want_rv, want_uid = preconditions.get("resourceVersion"), preconditions.get("uid")
            if want_rv is not None and str(want_rv) != meta["resourceVersion"]:
                raise FakeApiError(
                    409,
                    f'Operation cannot be fulfilled on {kind.resource} "{name}": Precondition failed: '
                    f"ResourceVersion in precondition: {want_rv}, "
                    f"ResourceVersion in object meta: {meta['resourceVersion']}",
                    details={"name": name, "group": kind.group, "kind": kind.plural},
                )
            if want_uid is not None and want_uid != meta.get("uid"):
                raise FakeApiError(
                    409,
                    f'Operation cannot be fulfilled on {kind.resource} "{name}": Precondition failed: '
                    f"UID in precondition: {want_uid}, UID in object meta: {meta.get('uid')}",
                    details={"name": name, "group": kind.group, "kind": kind.plural},
                )
            if not dry_run:
                del self._objects[key]
                self._rv += 1
        done = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": kind.group, "kind": kind.plural, "uid": meta.get("uid")},
        }
        return _Reply(200, _dumps(done))

    # --- faults on the wire -----------------------------------------------------------

    def _fault_reply(
        self,
        fault: _Fault,
        method: str,
        path: str,
        query: dict[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> _Reply:
        if fault.body is not None:
            content_type = "text/html" if fault.body.lstrip().startswith(b"<") else "application/json"
            reply = _Reply(fault.status or 200, fault.body, content_type)
        elif fault.status is not None:
            code = fault.status
            if code >= 400:
                message = f"injected fault: {code} {reason_for(code)}"
                reply = _Reply(code, _dumps(status_body(code, message)))
            else:
                reply = _Reply(
                    code, _dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
                )
        elif method == "GET":
            reply, _ = self._respond(method, path, query, headers, body)  # safe: a GET changes no state
        else:
            reply = _Reply(
                200, _dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
            )
        if fault.retry_after is not None:
            reply.headers.append(("Retry-After", fault.retry_after))
        return reply


def _not_found(kind: _Kind, name: str) -> FakeApiError:
    return FakeApiError(
        404,
        f'{kind.resource} "{name}" not found',
        details={"name": name, "group": kind.group, "kind": kind.plural},
    )


def _invalid(kind: _Kind, name: str, errors: list[str]) -> FakeApiError:
    shown = errors[:20] + ([f"... and {len(errors) - 20} more errors"] if len(errors) > 20 else [])
    text = shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"
    causes = [
        {
            "reason": "FieldValueInvalid",
            "message": error.partition(": ")[2],
            "field": error.partition(": ")[0],
        }
        for error in errors[:20]
    ]
    return FakeApiError(
        422,
        f'{kind.qualified_kind} "{name}" is invalid: {text}',
        details={"name": name, "group": kind.group, "kind": kind.kind, "causes": causes},
    )


def _conflict_error(
    conflicts: list[tuple[tuple[str, str], FieldPath]], owners: Mapping[Any, _Owner]
) -> FakeApiError:
    lines = []
    causes = []
    for key, path in conflicts:
        owner = owners[key]
        who = f'conflict with "{owner.manager}"'
        if owner.operation != "Apply":
            who += f" ({owner.operation})"
        lines.append(f"{who} using {owner.api_version}: {_field_text(path)}")
        causes.append({"type": "FieldManagerConflict", "message": who, "field": _field_text(path)})
    plural = "s" if len(conflicts) > 1 else ""
    return FakeApiError(
        409,
        f"Apply failed with {len(conflicts)} conflict{plural}: " + "; ".join(lines),
        details={"causes": causes},
    )


def _dry_run(query: Mapping[str, str]) -> bool:
    value = query.get("dryRun")
    if value in (None, ""):
        return False
    if value != "All":
        raise FakeApiError(400, f'dryRun: Unsupported value: {value!r}: supported values: "All"')
    return True


def _parse_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        pass
    try:
        import yaml  # JSON is YAML; accept YAML too when PyYAML is there
    except ImportError:  # pragma: no cover
        raise FakeApiError(400, "the apply body is not valid JSON") from None
    try:
        return yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise FakeApiError(400, f"the apply body is neither JSON nor YAML: {exc}") from None


def _encode_token(snapshot: _Snapshot, offset: int) -> str:
    raw = _dumps({"id": snapshot.ident, "rv": snapshot.rv, "off": offset, "w": snapshot.what})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- HTTP plumbing --------------------------------------------------------------------


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeApiServer) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), slow without a resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client went away: normal for timeouts and fault tests
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "fake-kube-apiserver/1.0"

    @property
    def _server(self) -> _HttpServer:
        return cast(_HttpServer, self.server)

    def setup(self) -> None:
        super().setup()
        self._server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_OPTIONS(self) -> None:
        self._serve("OPTIONS")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self, method: str) -> None:
        fake = self._server.fake
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            request = Request(method, path, query, headers.get("content-type"), b"", 400, False, headers)
            fake._log(request, 400)
            self._write(_error_reply(FakeApiError(400, "malformed request body")))
            return
        request = Request(method, path, query, headers.get("content-type"), body, 0, False, headers)
        fault = fake._take_fault(method, path, query)
        if fault is not None:
            request.injected = True
            if fault.hang:
                fake._stopping.wait(fault.hang)
            if fault.drop:
                fake._log(request, 0)
                self._drop()
                return
            if fault.status is not None or fault.body is not None or fault.truncate:
                reply = fake._fault_reply(fault, method, path, query, headers, body)
                fake._log(request, reply.status)
                self._write(reply, truncate=fault.truncate)
                return
        reply, unhandled = fake._respond(method, path, query, headers, body)
        fake._log(request, reply.status, unhandled=unhandled)
        self._write(reply)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _write(self, reply: _Reply, *, truncate: bool = False) -> None:
        data = reply.body
        length = len(data)
        if truncate:
            data = data[: len(data) // 2]
            length = max(length, len(data) + 1)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(length))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            if truncate:
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            self.close_connection = True


# --- running as a process -----------------------------------------------------------


def load_state(server: FakeApiServer, path: str | os.PathLike[str]) -> None:
    """Load ``{"nodes": [...], "objects": [...]}``; objects are stored as-is (``put_object``)."""
    with open(path, encoding="utf-8") as src:
        state = json.load(src)
    server.set_nodes(state.get("nodes") or [])
    for obj in state.get("objects") or []:
        server.put_object(obj)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT: ``--port 0 --state F --kubeconfig OUT --ready-file F``."""
    parser = argparse.ArgumentParser(description="A fake Kubernetes API server for tests and demos.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--state", help='JSON file {"nodes": [...], "objects": [...]}')
    parser.add_argument("--kubeconfig", help="write a kubeconfig pointing at this server here")
    parser.add_argument("--context", default="fake")
    parser.add_argument("--ready-file", help="write the server URL here once listening")
    parser.add_argument("--page-cap", type=int, default=None, help="never return more nodes per page")
    parser.add_argument("--token", default="fake-token")
    parser.add_argument("--log-requests", action="store_true", help="print each request to stderr")
    args = parser.parse_args(argv)

    server = FakeApiServer(page_cap=args.page_cap, token=args.token, host=args.host, port=args.port)
    if args.state:
        load_state(server, args.state)
    if args.log_requests:
        server.on_request = lambda r: print(
            f"{r.method} {r.path} {r.status}{' (injected)' if r.injected else ''}",
            file=sys.stderr,
            flush=True,
        )
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    try:
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig, context=args.context)
        if args.ready_file:
            partial = f"{args.ready_file}.tmp"
            with open(partial, "w", encoding="utf-8") as out:
                out.write(server.url + "\n")
            os.replace(partial, args.ready_file)
        print(f"fake API server listening on {server.url}", file=sys.stderr, flush=True)
        while not done.wait(0.2):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
