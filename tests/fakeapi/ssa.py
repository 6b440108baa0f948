"""Server-side apply: managedFields in FieldsV1, the apply merge, field ownership and conflicts."""

from __future__ import annotations

import copy
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


def get_path(obj: Any, path: FieldPath) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return MISSING
        obj = obj[key]
    return obj


def set_path(obj: JSON, path: FieldPath, value: Any) -> None:
    for key in path[:-1]:
        child = obj.get(key)
        if not isinstance(child, dict):
            child = obj[key] = {}
        obj = child
    if isinstance(value, dict) and not value and isinstance(obj.get(path[-1]), dict):
        return  # owning an empty map keeps the keys others put in it
    obj[path[-1]] = copy.deepcopy(value)


def delete_path(obj: JSON, path: FieldPath, kept: Callable[[FieldPath], bool]) -> None:
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
    return "." + ".".join(path)


def conflict_error(
    conflicts: list[tuple[tuple[str, str], FieldPath]], owners: Mapping[Any, Owner]
) -> FakeApiError:
    lines = []
    causes = []
    for key, path in conflicts:
        owner = owners[key]
        who = f'conflict with "{owner.manager}"'
        if owner.operation != "Apply":
            who += f" ({owner.operation})"
        lines.append(f"{who} using {owner.api_version}: {field_text(path)}")
        causes.append({"type": "FieldManagerConflict", "message": who, "field": field_text(path)})
    plural = "s" if len(conflicts) > 1 else ""
    return FakeApiError(
        409,
        f"Apply failed with {len(conflicts)} conflict{plural}: " + "; ".join(lines),
        details={"causes": causes},
    )


def held(path: FieldPath, remaining: set[FieldPath], obj: JSON) -> bool:
    """Whether a field dropped by its applier must stay because someone else holds it."""
    for other in remaining:
        if other[: len(path)] == path:
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
) -> tuple[JSON, dict[tuple[str, str], Owner]]:
    """Apply ``applied`` (leaf path -> value) as ``manager`` to ``base``: (merged object, new owners).

    Fields other managers own and this apply changes are conflicts: a 409
    (:class:`FakeApiError`) without ``force``, a transfer of ownership with it.
    Fields the manager applied before and dropped now are removed unless
    someone else still holds them. ``default`` fills in the server's defaults.
    """
    merged = copy.deepcopy(base)
    for path, value in applied.items():
        set_path(merged, path, value)
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
    for path in sorted(previous - new_paths, key=len, reverse=True):
        if not held(path, remaining, merged):
            delete_path(merged, path, remaining.__contains__)
    default(merged)
    return merged, new_owners


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
