"""The fake API server: cluster state, request log, routing, lists and the HTTP plumbing."""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import functools
import json
import os
import re
import socket
import socketserver
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.fakeapi.core import (
    APPLY_CONTENT_TYPE,
    JSON,
    NODE_PATH,
    NS_PATH,
    ROUTES,
    FakeApiError,
    Kind,
    Reply,
    dumps,
    error_reply,
    kind_of,
    not_found,
    now,
    status_details,
)
from tests.fakeapi.faults import Fault, fault_reply, take_fault
from tests.fakeapi.jsonpatch import JSON_PATCH_CONTENT_TYPE, apply_patch, disowned
from tests.fakeapi.selectors import SelectorError, parse_selector, selector_matches
from tests.fakeapi.ssa import (
    Owner,
    leaf_paths,
    managed_fields,
    merge,
    owned_part,
    owners_from_managed_fields,
    restamps,
)
from tests.fakeapi.validation import _invalid_value, invalid, typed_problem, validate
from tests.fakeapi.versions import (
    CURRENT_VERSION,
    ENDPOINTS_DEPRECATED_MINOR,
    ENDPOINTS_WARNING,
    OLD_MINOR,
    version_body,
    version_minor,
)


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
class _Stored:
    obj: JSON  # without metadata.managedFields
    owners: dict[tuple[str, str], Owner]  # (manager, operation) -> entry, in managedFields order


@dataclass(frozen=True, eq=False, slots=True)
class _Item:
    """A list item, pre-serialised (in the representation its list was asked for)."""

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


class FakeApiServer:
    """A fake API server on 127.0.0.1: cluster state, faults, request log, HTTP.

    All state sits behind one lock; requests are served by daemon threads.
    """

    #: A continue token older than this many seconds answers 410 Expired.
    continue_ttl: float = 300.0
    #: At most this many list snapshots are kept; older tokens answer 410.
    max_snapshots: int = 64

    def __init__(
        self,
        *,
        page_cap: int | None = None,
        token: str = "fake-token",
        nobody_token: str = "nobody-token",
        host: str = "127.0.0.1",
        port: int = 0,
        version: str = CURRENT_VERSION,
    ) -> None:
        self.page_cap = page_cap
        #: The Kubernetes version imitated where versions differ: "1.35"
        #: (current, the default) or "1.24" (``tests/fakeapi/versions.py``).
        self.version = version
        self.minor = version_minor(version)
        self.token = token
        #: A token that authenticates with no rights at all (as user "nobody"):
        #: every resource request is 403, like ``RealApiServer.nobody_token``.
        self.nobody_token = nobody_token
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
        self._faults: list[Fault] = []
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
        meta.setdefault("creationTimestamp", now())
        meta["resourceVersion"] = str(self._rv)
        # Kept as a list item (no apiVersion, no kind); a GET adds them (_NODE_HEAD).
        doc = {**{k: v for k, v in node.items() if k not in ("apiVersion", "kind")}, "metadata": meta}
        return _Item(name, dict(meta.get("labels") or {}), dumps(doc))

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
        return None if item is None else cast(JSON, json.loads(_node_object(item)))

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
        kind = kind_of(str(doc.get("kind")))
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
        kind = kind_of(str(doc.get("kind")))
        doc.setdefault("apiVersion", kind.api_version)
        meta = doc.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ValueError("an object needs metadata.name")
        meta.setdefault("namespace", "default")
        owners = owners_from_managed_fields(meta.pop("managedFields", None) or [], kind.api_version)
        with self._lock:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now())
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
        k = kind_of(kind)
        with self._lock:
            stored = self._objects.get((k.kind, namespace, name))
            return None if stored is None else copy.deepcopy(self._render(stored))

    def objects(self, kind: str, namespace: str | None = None) -> list[JSON]:
        """Deep copies of all objects of a kind (in a namespace, or all), sorted by name."""
        k = kind_of(kind)
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
        fault = Fault(
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

    def _take_fault(self, method: str, path: str, query: Mapping[str, str]) -> Fault | None:
        with self._lock:
            return take_fault(self._faults, method, path, query)

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
    ) -> tuple[Reply, bool]:
        """(reply, unhandled) for a request that no fault intercepted."""
        # The scheme is case-insensitive, as in kube-apiserver (the client's
        # in-cluster loader sends "bearer <token>").
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or token not in (self.token, self.nobody_token):
            return error_reply(FakeApiError(401, "Unauthorized")), False
        if token == self.nobody_token:
            if path == "/version" and method == "GET":  # system:public-info-viewer: everyone
                return self._route(method, path, query, headers, body)
            return error_reply(forbidden(NOBODY_USER, method, path, query)), False
        with self._lock:
            denied = any(m in ("*", method) and p.fullmatch(path) for m, p in self._forbidden)
        if denied:
            return error_reply(forbidden(FAKE_USER, method, path, query)), False
        try:
            reply, unhandled = self._route(method, path, query, headers, body)
        except FakeApiError as exc:
            reply, unhandled = error_reply(exc), False
        except Exception as exc:  # a bug in the fake: answer like a real server would, and keep it
            self.errors.append(traceback.format_exc())
            return error_reply(FakeApiError(500, f"fake API server bug: {exc!r}")), False
        if self.minor >= ENDPOINTS_DEPRECATED_MINOR and _is_endpoints(path):
            # Any request for v1 Endpoints that reaches its handler (past authorization).
            reply = replace(reply, headers=[*reply.headers, ("Warning", ENDPOINTS_WARNING)])
        return reply, unhandled

    def _route(
        self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], body: bytes
    ) -> tuple[Reply, bool]:
        not_allowed = FakeApiError(405, "the server does not allow this method on the requested resource")
        if path == "/api/v1/nodes":
            if method != "GET":
                return error_reply(not_allowed), True
            return self._list_nodes(query), False
        match = NODE_PATH.fullmatch(path)
        if match:
            if method != "GET":
                return error_reply(not_allowed), True
            with self._lock:
                item = self._nodes.get(match[1])
            if item is None:
                raise FakeApiError(
                    404, f'nodes "{match[1]}" not found', details={"name": match[1], "kind": "nodes"}
                )
            return Reply(200, _node_object(item)), False
        if path == "/version" and method == "GET":
            return Reply(200, dumps(version_body(self.minor))), False
        match = NS_PATH.fullmatch(path)
        kind = ROUTES.get((match[1], match[3])) if match else None
        if match is None or kind is None:
            return error_reply(FakeApiError(404, "the server could not find the requested resource")), True
        namespace, name = match[2], match[4]
        if name is None:
            if method != "GET":
                return error_reply(not_allowed), True
            return self._list_objects(kind, namespace, query, _wants_metadata(headers)), False
        if method == "GET":
            with self._lock:
                stored = self._objects.get((kind.kind, namespace, name))
                if stored is None:
                    raise not_found(kind, name)
                return Reply(200, dumps(self._render(stored))), False
        if method == "PATCH":
            return self._patch(kind, namespace, name, query, headers, body), False
        if method == "DELETE":
            return self._delete(kind, namespace, name, query, body), False
        return error_reply(not_allowed), True

    # --- lists ---------------------------------------------------------------------

    def _list_nodes(self, query: Mapping[str, str]) -> Reply:
        with self._lock:
            if self._node_items is None:
                self._node_items = tuple(sorted(self._nodes.values(), key=lambda item: item.name))
            items = self._node_items
        return self._page("nodes", "NodeList", "v1", items, query, cap=self.page_cap)

    def _list_objects(self, kind: Kind, namespace: str, query: Mapping[str, str], metadata: bool) -> Reply:
        with self._lock:
            found = sorted(
                (name, stored)
                for (kind_name, ns, name), stored in self._objects.items()
                if kind_name == kind.kind and ns == namespace
            )
            items = tuple(_object_item(name, self._render(stored), metadata) for name, stored in found)
        if metadata:
            # A continue token of this list serves the representation its first page was asked in.
            what = f"{kind.plural}/{namespace}"
            return self._page(what, "PartialObjectMetadataList", META_V1, items, query, cap=None)
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
    ) -> Reply:
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
        # Like etcd, "more" means more items to look at, matching or not: a
        # filtered list can end with an empty page.
        more = index < len(items)
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
        head = dumps({"kind": list_kind, "apiVersion": api_version, "metadata": meta})
        if not chosen and list_kind == "PartialObjectMetadataList":
            # kube-apiserver builds this list's items as a Go slice that stays
            # nil when nothing matches: served as null (a plain list says []).
            return Reply(200, head[:-1] + b',"items":null}')
        return Reply(200, b"".join((head[:-1], b',"items":[', b",".join(chosen), b"]}")))

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
            meta["managedFields"] = managed_fields(stored.owners.values())
        obj["metadata"] = meta
        return obj

    def _patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Reply:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == JSON_PATCH_CONTENT_TYPE:
            return self._json_patch(kind, namespace, name, query, body)
        if content_type != APPLY_CONTENT_TYPE:
            raise FakeApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{APPLY_CONTENT_TYPE} (got {content_type or 'none'!r}; "
                "this fake serves server-side apply and JSON patch only)",
            )
        manager = query.get("fieldManager", "")
        if not manager:
            raise _options_invalid(
                "PatchOptions", "fieldManager", "Required value: is required for apply patch"
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
        return Reply(status, dumps(result))

    def _json_patch(
        self, kind: Kind, namespace: str, name: str, query: Mapping[str, str], body: bytes
    ) -> Reply:
        """A JSON patch (``test`` and ``remove``): an update, defaulted and validated; removed fields lose
        their owners. An unchanged object is not written."""
        ops = _parse_body(body)
        with self._lock:
            key = (kind.kind, namespace, name)
            stored = self._objects.get(key)
            if stored is None:
                raise not_found(kind, name)
            patched = apply_patch(stored.obj, ops)
            self._default(kind, patched)
            errors = validate(kind.kind, patched)
            if errors:
                raise invalid(kind, name, errors)
            if patched == stored.obj:
                return Reply(200, dumps(self._render(stored)))
            result = _Stored(patched, disowned(stored.owners, patched))
            if not _dry_run(query):
                self._rv += 1
                patched["metadata"]["resourceVersion"] = str(self._rv)
                self._objects[key] = result
            return Reply(200, dumps(self._render(result)))

    def _apply(
        self,
        kind: Kind,
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
                "Incorrect version specified in apply patch. "
                f"Specified patch version: {doc.get('apiVersion')}, expected: {kind.api_version}",
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
        typed = typed_problem(kind.kind, doc)
        if typed:
            # kube-apiserver builds a typed object of the patch before anything
            # else: a value of the wrong type is a 500 there, not a 422.
            raise FakeApiError(
                500,
                f"failed to create typed patch object (/{name}; {kind.group}/{kind.version}, "
                f"Kind={kind.kind}): {typed}",
                reason="",
            )
        owned = owned_part(doc, kind)
        applied = dict(leaf_paths(owned, kind=kind.kind)) if owned else {}
        with self._lock:
            key = (kind.kind, namespace, name)
            stored = self._objects.get(key)
            old = stored.obj if stored is not None else None
            want_rv = meta.get("resourceVersion")
            # A resourceVersion is a precondition on an existing object only: an
            # apply that creates ignores it (kube-apiserver answers 201).
            if (
                old is not None
                and want_rv not in (None, "", "0")
                and str(want_rv) != old["metadata"]["resourceVersion"]
            ):
                raise FakeApiError(
                    409,
                    f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    details=status_details(kind, name, kind.plural),
                )
            want_uid = meta.get("uid")
            if want_uid and old is not None and want_uid != old["metadata"].get("uid"):
                raise invalid(kind, name, [_invalid_value("metadata.uid", want_uid, "field is immutable")])
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
                        "creationTimestamp": now(),
                    },
                }
            merged, raw, new_owners = merge(
                base,
                owners,
                manager,
                kind.api_version,
                applied,
                force=force,
                default=functools.partial(self._default, kind),
            )
            if kind.kind == "Service" and old is not None:
                before, after = old.get("spec", {}).get("clusterIP"), merged.get("spec", {}).get("clusterIP")
                if before and before != after:
                    raise invalid(
                        kind, name, [_invalid_value("spec.clusterIPs[0]", [after], "may not change once set")]
                    )
            errors = validate(kind.kind, merged, self.minor)
            if errors:
                raise invalid(kind, name, errors)

            if stored is not None:
                old_sets = {k: o.paths for k, o in owners.items()}
                new_sets = {k: o.paths for k, o in new_owners.items()}
                # v1.24 re-stamps managedFields (a write) on such a repeated apply; current servers do not.
                restamp = self.minor <= OLD_MINOR and restamps(
                    raw, old, functools.partial(self._null_fields, kind)
                )
                if merged == old and old_sets == new_sets and not restamp:
                    return 200, self._render(stored)  # a no-op: same resourceVersion, same time stamps
            if kind.kind == "EndpointSlice":
                # EndpointSlices count generations: any change outside metadata.
                generation = int((old or {}).get("metadata", {}).get("generation") or 0)
                if old is None or _without_meta(merged) != _without_meta(old):
                    generation += 1
                merged["metadata"]["generation"] = generation
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
    def _normalize(kind: Kind, obj: JSON) -> JSON:
        """The object as kube-apiserver stores it: empty maps and lists it omits dropped, ``null`` kept."""
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            for name in ("labels", "annotations", "ownerReferences"):
                if meta.get(name) in ({}, []):
                    del meta[name]
        if kind.kind == "Endpoints" and obj.get("subsets") == []:
            del obj["subsets"]
        elif kind.kind == "Service":
            spec = obj.get("spec")
            if isinstance(spec, dict) and spec.get("selector") == {}:
                del spec["selector"]
        elif kind.kind == "EndpointSlice":
            for name in ("endpoints", "ports"):
                if obj.get(name) == []:
                    obj[name] = None
        return FakeApiServer._null_fields(kind, obj)

    @staticmethod
    def _null_fields(kind: Kind, obj: JSON) -> JSON:
        """Fields never left out: an EndpointSlice's endpoints and ports are served as null when unset
        (not omitempty in k8s.io/api discovery/v1)."""
        if kind.kind == "EndpointSlice":
            for name in ("endpoints", "ports"):
                obj.setdefault(name, None)
        return obj

    def _default(self, kind: Kind, obj: JSON) -> None:
        """Server-side defaults, owned by nobody (so clients must not compare naively)."""
        self._normalize(kind, obj)
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
                if spec["clusterIP"] == "None" and not spec.get("selector"):
                    # A headless Service without a selector gets both families
                    # (its endpoints come from elsewhere, of either family).
                    spec.setdefault("ipFamilies", ["IPv4", "IPv6"])
                    spec.setdefault("ipFamilyPolicy", "RequireDualStack")
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
            for endpoint in obj.get("endpoints") or []:
                if isinstance(endpoint, dict):
                    endpoint.setdefault("conditions", {})

    def _delete(self, kind: Kind, namespace: str, name: str, query: Mapping[str, str], body: bytes) -> Reply:
        dry_run = _dry_run(query, "DeleteOptions")
        options: Any = {}
        if body.strip():
            # With a body, the real server reads the options from the body alone
            # and ignores the query (apiserver handlers/delete.go): a dryRun=All
            # query beside a preconditions body deletes for real.
            dry_run = False
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
                raise not_found(kind, name)
            meta = stored.obj["metadata"]
            want_rv, want_uid = preconditions.get("resourceVersion"), preconditions.get("uid")
            failed = None
            if want_rv is not None and str(want_rv) != meta["resourceVersion"]:
                failed = (
                    f"the ResourceVersion in the precondition ({want_rv}) does not match the ResourceVersion "
                    f"in record ({meta['resourceVersion']}). The object might have been modified"
                )
            elif want_uid is not None and want_uid != meta.get("uid"):
                failed = (
                    f"the UID in the precondition ({want_uid}) does not match the UID in record "
                    f"({meta.get('uid')}). The object might have been deleted and then recreated"
                )
            if failed:
                # Worded by the storage layer, which names the Kind, not the resource.
                raise FakeApiError(
                    409,
                    f'Operation cannot be fulfilled on {kind.qualified_kind} "{name}": {failed}',
                    details=status_details(kind, name, kind.kind),
                )
            if not dry_run:
                del self._objects[key]
                self._rv += 1
        done = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {**status_details(kind, name, kind.plural), "uid": meta.get("uid")},
        }
        return Reply(200, dumps(done))


_NODE_HEAD = b'{"kind":"Node","apiVersion":"v1",'


def _is_endpoints(path: str) -> bool:
    match = NS_PATH.fullmatch(path)
    return match is not None and ROUTES.get((match[1], match[3])) is kind_of("Endpoints")


def _node_object(item: _Item) -> bytes:
    """A node as GET serves it: the list item with its apiVersion and kind."""
    return _NODE_HEAD + item.data[1:] if len(item.data) > 2 else _NODE_HEAD[:-1] + b"}"


FAKE_USER = "system:serviceaccount:kube-system:kubelet-endpoints-reconciler"
NOBODY_USER = "nobody"


def forbidden(user: str, method: str, path: str, query: Mapping[str, str]) -> FakeApiError:
    """The 403 of an RBAC denial, worded as kube-apiserver's authorizer words it."""
    node = NODE_PATH.fullmatch(path)
    namespaced = NS_PATH.fullmatch(path)
    if path == "/api/v1/nodes" or node:
        kind: Kind | None = Kind("Node", "v1", "nodes", "/api/v1")
        namespace, name = None, node[1] if node else None
    elif namespaced and (namespaced[1], namespaced[3]) in ROUTES:
        kind = ROUTES[(namespaced[1], namespaced[3])]
        namespace, name = namespaced[2], namespaced[4]
    else:
        kind = None
    verb = {"GET": "get", "PATCH": "patch", "DELETE": "delete", "POST": "create", "PUT": "update"}.get(
        method, method.lower()
    )
    if kind is None:
        return FakeApiError(403, f'forbidden: User "{user}" cannot {verb} path "{path}"')
    if name is None:
        verb = {
            "get": "watch" if query.get("watch") in ("1", "true") else "list",
            "delete": "deletecollection",
        }.get(verb, verb)
    what = kind.resource + (f' "{name}"' if name else "")
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return FakeApiError(
        403,
        f'{what} is forbidden: User "{user}" cannot {verb} resource "{kind.plural}" in API group '
        f'"{kind.group}" {scope}',
        details=status_details(kind, name, kind.plural),
    )


#: The group-version of PartialObjectMetadataList, and the Accept header's
#: parameters that ask for one ("application/json;as=...;g=...;v=...").
META_V1 = "meta.k8s.io/v1"
_METADATA_MEDIA = {"as": "PartialObjectMetadataList", "g": "meta.k8s.io", "v": "v1"}


def _wants_metadata(headers: Mapping[str, str]) -> bool:
    """Does the Accept header ask for a PartialObjectMetadataList, as kube-apiserver negotiates it?"""
    for media in headers.get("accept", "").split(","):
        params = dict(p.strip().partition("=")[::2] for p in media.split(";")[1:])
        if all(params.get(k) == v for k, v in _METADATA_MEDIA.items()):
            return True
    return False


def _object_item(name: str, obj: JSON, metadata: bool) -> _Item:
    """A list item: the object without apiVersion and kind (a real list's items carry
    neither), or with ``metadata`` its metadata alone as a PartialObjectMetadata (which does)."""
    if metadata:
        body = {"kind": "PartialObjectMetadata", "apiVersion": META_V1, "metadata": obj["metadata"]}
    else:
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    return _Item(name, dict(obj["metadata"].get("labels") or {}), dumps(body))


def _without_meta(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if k != "metadata"}


def _options_invalid(options: str, field_name: str, message: str) -> FakeApiError:
    """The 422 of bad request options (PatchOptions, DeleteOptions), as the API server words it."""
    reason = "FieldValueNotSupported" if message.startswith("Unsupported") else "FieldValueRequired"
    return FakeApiError(
        422,
        f'{options}.meta.k8s.io "" is invalid: {field_name}: {message}',
        details={
            "group": "meta.k8s.io",
            "kind": options,
            "causes": [{"reason": reason, "message": message, "field": field_name}],
        },
    )


def _dry_run(query: Mapping[str, str], options: str = "PatchOptions") -> bool:
    value = query.get("dryRun")
    if value in (None, ""):
        return False
    if value != "All":
        raise _options_invalid(
            options, "dryRun", f'Unsupported value: []string{{"{value}"}}: supported values: "All"'
        )
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
    raw = dumps({"id": snapshot.ident, "rv": snapshot.rv, "off": offset, "w": snapshot.what})
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
    # TCP_NODELAY, as Go's net/http sets it: headers and body are two writes,
    # and with Nagle's algorithm the body would wait ~40 ms for the client's
    # delayed ACK on every kept-alive answer (tests/contract/test_fakeapi.py).
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
            self._write(error_reply(FakeApiError(400, "malformed request body")))
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
                reply = fault_reply(
                    fault, method, lambda: fake._respond(method, path, query, headers, body)[0]
                )
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

    def _write(self, reply: Reply, *, truncate: bool = False) -> None:
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


# --- the state file of the process mode ------------------------------------------


def load_state(server: FakeApiServer, path: str | os.PathLike[str]) -> None:
    """Load ``{"nodes": [...], "objects": [...]}``; objects are stored as-is (``put_object``)."""
    with open(path, encoding="utf-8") as src:
        state = json.load(src)
    server.set_nodes(state.get("nodes") or [])
    for obj in state.get("objects") or []:
        server.put_object(obj)
