"""Server-side apply: managedFields in FieldsV1, the apply merge, field ownership and conflicts."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from tests.fakeapi.core import JSON, MISSING, FakeApiError, FieldPath, Kind, now


@dataclass(frozen=True)
class Owner:
    manager: str
    operation: str
    api_version: str
    time: str
    paths: frozenset[FieldPath]
    subresource: str = ""


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


def owned_part(doc: JSON, kind: Kind) -> JSON:
    """The part of an apply body whose leaves become owned fields."""
    out = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    if kind.kind == "Service":
        out.pop("status", None)  # the status subresource: ignored on the main resource
    meta = {k: v for k, v in (doc.get("metadata") or {}).items() if k not in _UNOWNED_META}
    if meta:
        out = {"metadata": meta, **out}
    return out


#: Lists merged item by item under server-side apply (``x-kubernetes-list-type: map``):
#: (kind, path) -> (key fields, their defaults). Every other list is atomic: it is
#: one field, replaced whole (``Endpoints.subsets``, ``EndpointSlice.endpoints``
#: and ``.ports``). See https://kubernetes.io/docs/reference/using-api/server-side-apply/#merge-strategy
MAP_LISTS: dict[tuple[str, FieldPath], tuple[tuple[str, ...], dict[str, Any]]] = {
    ("Service", ("spec", "ports")): (("port", "protocol"), {"protocol": "TCP"}),
}
#: The path element of a map-list item's own existence (FieldsV1 ``"."``).
ITEM = "."


def item_key(item: Any, keys: tuple[str, ...], defaults: Mapping[str, Any]) -> str:
    """The FieldsV1 key of a map-list item: ``k:{"port":10250,"protocol":"TCP"}``."""
    values = {k: (item.get(k, defaults.get(k)) if isinstance(item, dict) else None) for k in keys}
    return "k:" + json.dumps(values, separators=(",", ":"))


def _map_list(kind: str, path: FieldPath) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    return MAP_LISTS.get((kind, path))


def leaf_paths(value: Any, prefix: FieldPath = (), kind: str = "") -> Iterator[tuple[FieldPath, Any]]:
    """(path, value) of every owned field: maps recurse, atomic lists and scalars are leaves, ``{}`` too.

    The items of a map list (:data:`MAP_LISTS`) recurse too, under their ``k:`` key:
    ``(..., key, ".")`` is the item's existence (its value: the item's key fields).
    """
    map_list = _map_list(kind, prefix) if prefix else None
    if map_list is not None and isinstance(value, list) and all(isinstance(i, dict) for i in value):
        keys, defaults = map_list
        for item in value:
            key = item_key(item, keys, defaults)
            yield (*prefix, key, ITEM), {k: item[k] for k in keys if k in item}
            for field_name, child in item.items():
                yield from leaf_paths(child, (*prefix, key, str(field_name)), kind)
    elif isinstance(value, dict) and (value or not prefix):
        for key, child in value.items():
            yield from leaf_paths(child, (*prefix, str(key)), kind)
    else:
        yield prefix, value


def _fields_key(key: str) -> str:
    return key if key == ITEM or key.startswith("k:") else f"f:{key}"


def fields_v1(paths: Iterable[FieldPath]) -> JSON:
    """The nested FieldsV1 form of a set of paths (``f:`` fields, ``k:`` map-list items; a leaf is ``{}``)."""
    root: JSON = {}
    for path in sorted(paths):
        node = root
        for key in path:
            node = node.setdefault(_fields_key(key), {})
    return root


def paths_from_fields_v1(fields: Mapping[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    """The paths of a FieldsV1 document.

    ``k:`` keys are map-list items (as :func:`leaf_paths` names them); ``v:`` and
    ``i:`` keys (sets, lists by index) make their list one owned field.
    """
    out: set[FieldPath] = set()
    for key, sub in fields.items():
        if key == ITEM:
            out.add((*prefix, ITEM))
            continue
        if key.startswith("k:"):
            path = (*prefix, "k:" + json.dumps(json.loads(key[2:]), separators=(",", ":")))
        elif key.startswith("f:"):
            path = (*prefix, key[2:])
        else:
            continue
        sub = sub if isinstance(sub, Mapping) else {}
        if any(k.startswith(("f:", "k:")) or k == ITEM for k in sub):
            out |= paths_from_fields_v1(sub, path)
        else:
            out.add(path)
    return out


def _find_item(items: list[Any], key: str) -> int | None:
    want = json.loads(key[2:])
    for index, item in enumerate(items):
        if isinstance(item, dict) and all(item.get(k, _KEY_DEFAULTS.get(k)) == v for k, v in want.items()):
            return index
    return None


#: The defaults of map-list key fields (a port without protocol is TCP).
_KEY_DEFAULTS: dict[str, Any] = {k: v for _, defaults in MAP_LISTS.values() for k, v in defaults.items()}


def get_path(obj: Any, path: FieldPath) -> Any:
    """The value at ``path`` (map-list items by ``k:`` key), or :data:`MISSING`."""
    for key in path:
        if key == ITEM:
            return obj
        if key.startswith("k:"):
            index = _find_item(obj, key) if isinstance(obj, list) else None
            if index is None:
                return MISSING
            obj = obj[index]
        elif not isinstance(obj, dict) or key not in obj:
            return MISSING
        else:
            obj = obj[key]
    return obj


def set_path(obj: JSON, path: FieldPath, value: Any) -> None:
    """Set the field at ``path``, making the maps, lists and map-list items on the way."""
    node: Any = obj
    for depth, key in enumerate(path[:-1]):
        nxt = path[depth + 1]
        if key.startswith("k:"):
            index = _find_item(node, key)
            if index is None:
                node.append({})
                index = len(node) - 1
            node = node[index]
            continue
        child = node.get(key)
        if nxt.startswith("k:"):
            if not isinstance(child, list):
                child = node[key] = []
        elif not isinstance(child, dict):
            child = node[key] = {}
        node = child
    last = path[-1]
    if last == ITEM:
        node.update({k: copy.deepcopy(v) for k, v in value.items() if k not in node})
        return
    if isinstance(value, dict) and not value and isinstance(node.get(last), dict):
        return  # owning an empty map keeps the keys others put in it
    node[last] = copy.deepcopy(value)


def delete_path(obj: JSON, path: FieldPath, kept: Callable[[FieldPath], bool]) -> None:
    """Remove a field (or a map-list item), then the parent maps it leaves empty (unless owned)."""
    if path[-1] == ITEM:
        items = get_path(obj, path[:-2])
        index = _find_item(items, path[-2]) if isinstance(items, list) else None
        if index is not None:
            del items[index]
            if not items and not kept(path[:-2]):
                delete_path(obj, path[:-2], kept)
        return
    parents: list[Any] = []
    node: Any = obj
    for key in path[:-1]:
        parents.append(node)
        node = get_path(node, (key,))
        if node is MISSING:
            return
    if not isinstance(node, dict):
        return
    node.pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):
        parent_path = path[:depth]
        container = parents[depth - 1]
        if not isinstance(container, dict) or path[depth - 1].startswith("k:"):
            return  # a map-list item goes with its "." field, not when emptied
        value = container.get(path[depth - 1])
        if parent_path == ("metadata",) or value not in ({}, []) or kept(parent_path):
            return
        del container[path[depth - 1]]


def has_empty(value: Any) -> bool:
    if isinstance(value, dict):
        return not value or any(has_empty(v) for v in value.values())
    if isinstance(value, list):
        return not value or any(has_empty(v) for v in value)
    return False


def conflicts_at(q: FieldPath, applied: Mapping[FieldPath, Any], old: JSON, new: JSON) -> bool:
    """Whether this apply changes a field ``q`` another manager owns."""
    for p in applied:
        if p == q:
            before = get_path(old, q)
            if isinstance(applied[p], dict) and isinstance(before, dict):
                continue  # co-owning a map's existence is never a conflict
            if before != get_path(new, q):
                return True
        elif p[: len(q)] == q:  # q holds p: only a problem if q is not a map
            if not isinstance(get_path(old, q), dict):
                return True
        elif q[: len(p)] == p and get_path(old, q) != get_path(new, q):
            return True
    return False


def field_text(path: FieldPath) -> str:
    """A path as the API server prints it: ``.spec.ports[port=10250,protocol="TCP"].name``."""
    out = ""
    for key in path:
        if key == ITEM:
            continue
        if key.startswith("k:"):
            fields = json.loads(key[2:])
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in fields.items()) + "]"
        else:
            out += "." + key
    return out


def _manager_text(owner: Owner) -> str:
    # As k8s.io/apiserver's fieldmanager prints a manager: an Update names its
    # apiVersion and time, an Apply only its name.
    text = json.dumps(owner.manager)
    if owner.subresource:
        text += f" with subresource {json.dumps(owner.subresource)}"
    if owner.operation == "Update":
        text += f" using {owner.api_version} at {owner.time}"
    return text


def conflict_error(
    conflicts: list[tuple[tuple[str, str], FieldPath]], owners: Mapping[Any, Owner]
) -> FakeApiError:
    """The 409 of an apply that would change fields other managers own."""
    causes = []
    by_manager: dict[str, list[str]] = {}
    for key, path in conflicts:
        who = _manager_text(owners[key])
        causes.append(
            {"reason": "FieldManagerConflict", "message": f"conflict with {who}", "field": field_text(path)}
        )
        by_manager.setdefault(who, []).append(field_text(path))
    if len(conflicts) == 1:
        text = f"conflict with {next(iter(by_manager))}: {causes[0]['field']}"
    else:
        text = "\n".join(
            f"conflicts with {who}:\n" + "\n".join(f"- {p}" for p in paths)
            for who, paths in by_manager.items()
        )
    plural = "s" if len(conflicts) > 1 else ""
    return FakeApiError(
        409, f"Apply failed with {len(conflicts)} conflict{plural}: {text}", details={"causes": causes}
    )


def held(path: FieldPath, remaining: set[FieldPath], obj: JSON) -> bool:
    """Whether a field dropped by its applier must stay because someone else holds it."""
    base = path[:-1] if path[-1] == ITEM else path  # a map-list item stays while any field of it is owned
    for other in remaining:
        if other[: len(base)] == base:
            return True  # the same field, or one inside it
        if path[: len(other)] == other and not isinstance(get_path(obj, other), dict):
            return True  # inside an atomic field someone owns
    return False


def merge(
    base: JSON,
    owners: Mapping[tuple[str, str], Owner],
    manager: str,
    api_version: str,
    applied: Mapping[FieldPath, Any],
    *,
    force: bool,
    default: Callable[[JSON], None],
) -> tuple[JSON, JSON, dict[tuple[str, str], Owner]]:
    """Apply ``applied`` (path -> value) as ``manager`` to ``base``: (merged, raw, new owners).

    Fields other managers own and this apply changes are conflicts: a 409
    (:class:`FakeApiError`) without ``force``, a transfer of ownership with it.
    Fields the manager applied before and dropped now are removed unless
    someone else still holds them. ``default`` fills in the server's defaults
    in ``merged``; ``raw`` is the same merge without them, as the API server
    compares it with the live object to decide whether the applier's
    managedFields entry is re-stamped (see :func:`restamps`).
    """
    raw = copy.deepcopy(base)
    for path, value in applied.items():
        set_path(raw, path, value)
    merged = copy.deepcopy(raw)
    default(merged)

    me = (manager, "Apply")
    conflicts = [
        (other, q)
        for other, owner in owners.items()
        if other != me
        for q in sorted(owner.paths)
        if conflicts_at(q, applied, base, merged)
    ]
    if conflicts and not force:
        raise conflict_error(conflicts, owners)
    lost: dict[tuple[str, str], set[FieldPath]] = {}
    for other, q in conflicts:
        lost.setdefault(other, set()).add(q)
    new_paths = frozenset(applied)
    new_owners: dict[tuple[str, str], Owner] = {}
    mine = Owner(manager, "Apply", api_version, now(), new_paths)
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
    # Whole map-list items first (found by their key fields), then the deepest fields.
    for path in sorted(previous - new_paths, key=lambda p: (p[-1] != ITEM, -len(p))):
        if not held(path, remaining, merged):
            delete_path(merged, path, remaining.__contains__)
            delete_path(raw, path, remaining.__contains__)
    default(merged)
    return merged, raw, new_owners


def restamps(raw: JSON, live: JSON | None, null_fields: Callable[[JSON], JSON]) -> bool:
    """Whether an apply re-stamps its managedFields entry, and so writes.

    kube-apiserver compares the merge *before* defaulting with the live object:
    an atomic list applied without the fields the server defaults in it (an
    EndpointSlice endpoint without ``conditions``), or an empty map or list the
    server then drops (``annotations: {}``, ``subsets: []``), differs every
    time, so every such apply writes a new managedFields time and a new
    resourceVersion, though the object is the same. (The real server does
    that once the time stamp's second has changed; the fake always does.)
    """
    return live is None or null_fields(raw) != live


def managed_fields(owners: Iterable[Owner]) -> list[JSON]:
    """``metadata.managedFields`` as served, one entry per (manager, operation)."""
    entries = []
    for owner in owners:
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
    return entries


def owners_from_managed_fields(
    entries: Iterable[Mapping[str, Any]], api_version: str
) -> dict[tuple[str, str], Owner]:
    """The owners that ``metadata.managedFields`` entries (in FieldsV1) describe."""
    owners: dict[tuple[str, str], Owner] = {}
    for entry in entries:
        owner = Owner(
            manager=str(entry.get("manager", "")),
            operation=str(entry.get("operation", "Update")),
            api_version=str(entry.get("apiVersion", api_version)),
            time=str(entry.get("time", now())),
            paths=frozenset(paths_from_fields_v1(entry.get("fieldsV1") or {})),
            subresource=str(entry.get("subresource", "")),
        )
        owners[(owner.manager, owner.operation)] = owner
    return owners
