"""The objects the API server holds now, slimmed once on arrival; pure.

Every live Service, Endpoints and EndpointSlice a run reads becomes one
:class:`LiveObject`: its name, ``resourceVersion``, uid, labels, the IPs it
publishes, whether it is ours, the fields our field manager owns, and the
fields other managers own that we do not set.

Whether an apply would change an object is decided from the fields our
manager owns (its ``managedFields`` entry), as client-go's ``Extract*``
functions do: server defaults, other managers' fields and what a list
response leaves out (a real server sends list items without ``apiVersion``
and ``kind``) never count as a difference.
https://kubernetes.io/docs/reference/using-api/server-side-apply/#field-management
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lib.desired import SLICE_MANAGED_BY
from lib.nodes import IPAddress, parse_ip

#: Identity and preconditions: never a field anyone owns.
_IDENTITY = {
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "resourceVersion"),
}
#: Foreign fields are every field another manager owns and we do not set
#: (docs/behaviour.md, "Other writers"), at the grain a JSON patch can remove
#: one: a member of these (a label, an annotation, an owner, a port) ...
_KEYED = (
    ("metadata", "labels"),
    ("metadata", "annotations"),
    ("metadata", "ownerReferences"),
    ("spec", "ports"),
)
#: ... a field of ``spec`` (``spec.selector``), of ``metadata`` only its
#: finalizers (the rest is identity), and any other top-level field.
_OPEN = ("metadata", "spec")
_METADATA = ("finalizers",)
#: Never foreign, whoever owns them: what the API server sets itself. A
#: Service created by a plain create records its defaults (type,
#: sessionAffinity, internalTrafficPolicy ...) as its creator's fields;
#: removed, they come straight back (or the removal is refused: clusterIP is
#: immutable), so each run would find and remove them again. A clusterIP or
#: type that keeps a Service from being ours is a conflict instead
#: (:meth:`LiveObject.not_headless`).
_SERVER_SET = {
    ("apiVersion",),
    ("kind",),
    ("status",),
    ("addressType",),  # an EndpointSlice's, immutable; ours always sets it
    *(
        ("spec", name)
        for name in (
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "type",
            "sessionAffinity",
            "internalTrafficPolicy",
            "externalTrafficPolicy",
            "allocateLoadBalancerNodePorts",
        )
    ),
}


@dataclass(frozen=True)
class ForeignField:
    """A field of one of our objects owned by another manager and not set by us."""

    path: tuple[str, ...]  # e.g. ("metadata", "labels", "team"), ("spec", "ports", '{"port":10255,...}')
    managers: tuple[str, ...]
    value: Any  # the live value (a label's text, a whole port item, a selector)
    keyed: bool = True  # a member of a map or map list (path[-1] its key); else a field of its own

    def describe(self) -> str:
        if not self.keyed:
            return ".".join(self.path)  # spec.selector
        scope, key = ".".join(self.path[:-1]), self.path[-1]
        return f"{scope}[{key}]"


@dataclass(frozen=True)
class LiveObject:
    """One live object, as much of it as a run needs."""

    kind: str
    name: str
    resource_version: str | None
    uid: str | None
    labels: Mapping[str, str]
    ours: bool  # EndpointSlice: labelled managed-by our field manager; other kinds: always
    address_type: str | None  # EndpointSlice only
    addresses: tuple[str, ...]  # every address it publishes, as written
    node_names: tuple[str, ...]  # the nodeName beside each address ("" when none)
    owned: Mapping[str, Any] | None  # our Apply entry's fieldsV1; None: we never applied to it
    others: tuple[tuple[str, Mapping[str, Any]], ...]  # (manager, fieldsV1) of every other manager
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    def ips(self) -> Iterator[IPAddress]:
        return (ip for ip, _ in self.holders())

    def holders(self) -> Iterator[tuple[IPAddress, str]]:
        """(IP, node name) for each address that is an IP."""
        for text, node in zip(self.addresses, self.node_names, strict=True):
            try:
                yield parse_ip(text), node
            except ValueError:
                continue

    def foreign(self, body: Mapping[str, Any]) -> tuple[ForeignField, ...]:
        """Fields other managers own here that ``body`` does not set (but those the server sets):
        a forced apply of ``body`` leaves them in place (SSA keeps other owners' fields)."""
        return tuple(_foreign(self.raw, body, self.others))

    def managers(self) -> list[str]:
        """Every field manager of this object but our own applies, sorted."""
        return sorted({m for m, _ in self.others})

    def not_headless(self) -> tuple[str, Any] | None:
        """For a Service: the field, and its value, that keeps it from being our headless one.

        ``spec.clusterIP`` is immutable once set (an apply of ``None`` over an
        allocated address is refused with 422, on every run); a ``type`` other
        than ClusterIP is someone else's Service in any case.
        """
        spec = self.raw.get("spec")
        spec = spec if isinstance(spec, Mapping) else {}
        if spec.get("clusterIP") not in (None, "", "None"):
            return "spec.clusterIP", spec.get("clusterIP")
        if spec.get("type") not in (None, "", "ClusterIP"):
            return "spec.type", spec.get("type")
        return None

    def removal(self, foreign: Iterable[ForeignField]) -> tuple[dict[str, Any], ...]:
        """JSON patch operations that remove ``foreign``, after a test of our resourceVersion.

        List items by index, highest first, so each index holds when applied;
        the test makes the patch fail with 422 if the object changed since read.
        """
        ops: list[tuple[tuple[int, str], dict[str, Any]]] = []
        for f in foreign:
            scope = "".join("/" + _pointer(key) for key in f.path[:-1])
            container = _walk(self.raw, f.path[:-1])
            if isinstance(container, list):
                index = container.index(f.value)
                ops.append(((1, f"{index:09d}"), {"op": "remove", "path": f"{scope}/{index}"}))
            else:
                ops.append(((0, f.path[-1]), {"op": "remove", "path": f"{scope}/{_pointer(f.path[-1])}"}))
        ops.sort(key=lambda o: o[0], reverse=True)
        test = {"op": "test", "path": "/metadata/resourceVersion", "value": self.resource_version}
        return (test, *(op for _, op in ops))

    def would_change(self, body: Mapping[str, Any]) -> bool:
        """Would a forced apply of ``body`` by our manager change this object?"""
        if self.owned is None:
            return True
        return not _same(self.owned, self.raw, _strip_identity(body))


@dataclass(frozen=True)
class Live:
    """What a run read: our Service, Endpoints, every slice labelled with our Service's name,
    the names of other Services in the namespace labelled ``k8s-app: kubelet``, and
    (when a slice is to be created) the names other slices of the namespace hold."""

    service: LiveObject | None = None
    endpoints: LiveObject | None = None
    slices: tuple[LiveObject, ...] = ()
    kubelet_services: tuple[str, ...] = ()
    #: Names of the namespace's other slices (not labelled with our Service's
    #: name), read only when a plan would create a slice: no new slice takes one.
    other_slice_names: frozenset[str] = frozenset()
    #: Those of them a plan would have used: another Service's slices, never written.
    name_taken: tuple[LiveObject, ...] = ()

    def ours(self) -> list[LiveObject]:
        return [s for s in self.slices if s.ours]

    def foreign_slices(self) -> list[LiveObject]:
        return [s for s in self.slices if not s.ours]

    def managed(self, manages_endpoints: bool, manages_slices: bool) -> list[LiveObject]:
        """The objects whose addresses we publish: our Endpoints and our slices, as managed."""
        objs: list[LiveObject] = []
        if manages_endpoints and self.endpoints is not None:
            objs.append(self.endpoints)
        if manages_slices:
            objs.extend(self.ours())
        return objs

    def published(self, manages_endpoints: bool, manages_slices: bool) -> set[IPAddress]:
        """Every IP our managed objects publish now (never a foreign slice's)."""
        return {ip for o in self.managed(manages_endpoints, manages_slices) for ip in o.ips()}


def view(obj: Mapping[str, Any], kind: str, field_manager: str) -> LiveObject:
    """Slim one live object (from a GET, a list item or an apply answer)."""
    meta = obj.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    owned: Mapping[str, Any] | None = None
    others: list[tuple[str, Mapping[str, Any]]] = []
    for entry in meta.get("managedFields") or ():
        fields = entry.get("fieldsV1") if isinstance(entry, Mapping) else None
        if not isinstance(fields, Mapping) or entry.get("subresource"):
            continue
        if entry.get("manager") == field_manager and entry.get("operation") == "Apply":
            owned = fields
        else:
            others.append((str(entry.get("manager")), fields))
    if kind == "EndpointSlice":
        ours = labels.get(SLICE_MANAGED_BY) == field_manager
        pairs = [(a, _node_of(ep)) for ep in obj.get("endpoints") or () for a in ep.get("addresses") or ()]
        address_type = obj.get("addressType")
    else:
        ours = True
        pairs = [
            (a.get("ip"), _node_of(a)) for s in obj.get("subsets") or () for a in s.get("addresses") or ()
        ]
        address_type = None
    rv = meta.get("resourceVersion")
    return LiveObject(
        kind=kind,
        name=str(meta.get("name")),
        resource_version=str(rv) if rv else None,
        uid=meta.get("uid"),
        labels=labels,
        ours=ours,
        address_type=str(address_type) if address_type else None,
        addresses=tuple(str(a) for a, _ in pairs),
        node_names=tuple(n for _, n in pairs),
        owned=owned,
        others=tuple(others),
        raw=obj,
    )


def _node_of(address: Mapping[str, Any]) -> str:
    """The node of an address: ``nodeName``, else a Node ``targetRef`` (all prometheus-operator sets).

    Interned: the node list's names are, so 30,000 live endpoints hold no copies.
    """
    ref = address.get("targetRef") or {}
    name = address.get("nodeName") or (ref.get("name") if ref.get("kind") == "Node" else None)
    return sys.intern(str(name or ""))


# --- which fields do others own ------------------------------------------------------


def _foreign(
    obj: Mapping[str, Any], body: Mapping[str, Any], others: Iterable[tuple[str, Mapping[str, Any]]]
) -> Iterator[ForeignField]:
    found: dict[tuple[tuple[str, ...], bool], list[str]] = {}
    for manager, fields in others:
        for scope, key in _owned(fields):
            if not _sets(body, scope, key):
                keyed = scope in _KEYED
                path = (*scope, key[2:]) if keyed else scope
                found.setdefault((path, keyed), []).append(manager)
    for (path, keyed), managers in sorted(found.items()):
        value = _value(obj, path) if keyed else _walk(obj, path)
        if value is not None:
            yield ForeignField(path, tuple(sorted(set(managers))), value, keyed)


def _owned(fields: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    """(scope, key) of each field of one manager's fieldsV1, at the grain a removal takes.

    A member of a :data:`_KEYED` map or list is (its scope, its ``f:``/``k:``
    key); any other field is (its path, ``""``).
    """
    for top in fields:
        if not top.startswith("f:") or (top[2:],) in _SERVER_SET:
            continue
        if top[2:] not in _OPEN:
            yield (top[2:],), ""
            continue
        for child in _at(fields, (top[2:],)):
            path = (top[2:], child[2:])
            if not child.startswith("f:") or path in _SERVER_SET:
                continue
            if path in _KEYED:
                yield from ((path, key) for key in _at(fields, path) if key != ".")
            elif top != "f:metadata" or path[1] in _METADATA:
                yield path, ""


def _pointer(key: str) -> str:
    """One JSON pointer token (RFC 6901: "~" and "/" escaped)."""
    return key.replace("~", "~0").replace("/", "~1")


def _sets(body: Mapping[str, Any], scope: tuple[str, ...], key: str) -> bool:
    """Does ``body`` set ``key`` (``f:name`` or ``k:{...}``) under ``scope``, or ``scope`` itself (no key)?"""
    node = _walk(body, scope)
    if not key:
        return node is not None
    if isinstance(node, Mapping):
        return key.startswith("f:") and key[2:] in node
    if isinstance(node, list) and key.startswith("k:"):
        keys = json.loads(key[2:])
        return any(_has_keys(item, keys) for item in node)
    return False


def _at(fields: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any]:
    node: Any = fields
    for key in path:
        node = node.get(f"f:{key}") if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def _walk(obj: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` through maps only (None where there is none)."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def _value(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The live value at a foreign field's path: a map entry, or a list item by its keys."""
    node = _walk(obj, path[:-1])
    last = path[-1]
    if isinstance(node, Mapping):
        return node.get(last)
    if isinstance(node, list) and last.startswith("{"):
        keys = json.loads(last)
        return next((item for item in node if _has_keys(item, keys)), None)
    return None


# --- would an apply change it ----------------------------------------------------------


def _strip_identity(body: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if (k,) not in _IDENTITY}
    meta = body.get("metadata")
    if isinstance(meta, Mapping):
        out["metadata"] = {k: v for k, v in meta.items() if ("metadata", k) not in _IDENTITY}
    return out


def _same(fields: Mapping[str, Any], live: Any, want: Any) -> bool:
    """Does ``live``, seen through the fields we own (``fields``), hold exactly ``want``?

    Exactly: every field of ``want`` is owned by us with the same value, and
    we own no field that ``want`` no longer sets (applying would remove it).
    A field owned whole (``{}``: a leaf, an atomic list or map) may hold
    more than ``want`` inside: the server's defaults within an item.
    """
    members = {k: v for k, v in fields.items() if k != "."}
    if not members:
        return _covers(live, want)
    if isinstance(want, Mapping):
        if not isinstance(live, Mapping):
            return False
        if {f"f:{k}" for k in want} != set(members):
            return False
        return all(k in live and _same(members[f"f:{k}"], live[k], v) for k, v in want.items())
    if isinstance(want, list):
        if not isinstance(live, list) or len(members) != len(want):
            return False
        return all(_same_item(members, live, item) for item in want)
    return False


def _same_item(members: Mapping[str, Any], live: list[Any], item: Any) -> bool:
    """One item of a granular list (a map list keyed by ``k:{...}``, or a set by ``v:``)."""
    for key, sub in members.items():
        if key.startswith("v:"):
            if json.loads(key[2:]) == item:
                return item in live
            continue
        if not key.startswith("k:"):
            continue
        keys = json.loads(key[2:])
        if isinstance(item, Mapping) and _has_keys(item, keys):
            match = next((x for x in live if _has_keys(x, keys)), None)
            return match is not None and _same(sub, match, item)
    return False


def _has_keys(item: Any, keys: Mapping[str, Any]) -> bool:
    return isinstance(item, Mapping) and all(item.get(k) == v for k, v in keys.items())


def _covers(live: Any, want: Any) -> bool:
    if live == want:
        # The common case (every unchanged slice), settled in C.
        return True
    if isinstance(want, Mapping):
        return isinstance(live, Mapping) and all(k in live and _covers(live[k], v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(live, list) and len(live) == len(want) and all(map(_covers, live, want))
    return False
