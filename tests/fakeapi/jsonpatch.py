"""JSON patch (RFC 6902), the ``test`` and ``remove`` operations, as kube-apiserver applies them.

The reconciler's ``--take-over`` removes fields other managers own on its
objects with such a patch, guarded by a ``test`` of the ``resourceVersion``.
What the server does with field ownership: a removed field is owned by no
one afterwards (a removal gives the patching manager no field), checked
against the real server in ``tests/test_contract.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tests.fakeapi.core import JSON, MISSING, FakeApiError
from tests.fakeapi.ssa import Owner, get_path

JSON_PATCH_CONTENT_TYPE = "application/json-patch+json"

#: kube-apiserver answers a failed ``test`` with a bare 422 Invalid.
_REJECTED = "the server rejected our request due to an error in our request"


def _tokens(pointer: Any) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise FakeApiError(400, f"invalid JSON pointer {pointer!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]] if pointer else []


def _parent(obj: Any, tokens: list[str]) -> tuple[Any, str | int]:
    """The container of the value ``tokens`` name, and its key there; 422 when there is none."""
    node = obj
    for token in tokens[:-1]:
        node = _child(node, token)
    if not tokens:
        raise FakeApiError(422, _REJECTED, reason="Invalid")
    last = tokens[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise FakeApiError(422, _REJECTED, reason="Invalid")
        return node, int(last)
    if not isinstance(node, dict) or last not in node:
        raise FakeApiError(422, _REJECTED, reason="Invalid")
    return node, last


def _child(node: Any, token: str) -> Any:
    if isinstance(node, dict) and token in node:
        return node[token]
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    raise FakeApiError(422, _REJECTED, reason="Invalid")


def apply_patch(obj: JSON, ops: Any) -> JSON:
    """``obj`` patched (a copy); raises :class:`FakeApiError`."""
    if not isinstance(ops, list):
        raise FakeApiError(400, "a JSON patch is a list of operations")
    patched = copy.deepcopy(obj)
    for op in ops:
        if not isinstance(op, Mapping):
            raise FakeApiError(400, "a JSON patch operation is an object")
        tokens = _tokens(op.get("path"))
        if op.get("op") == "test":
            container, key = _parent(patched, tokens)
            if container[key] != op.get("value"):
                raise FakeApiError(422, _REJECTED, reason="Invalid")
        elif op.get("op") == "remove":
            container, key = _parent(patched, tokens)
            del container[key]
        else:
            raise FakeApiError(
                415, f"this fake serves the JSON patch operations test and remove, not {op.get('op')!r}"
            )
    return patched


def disowned(owners: Mapping[tuple[str, str], Owner], obj: JSON) -> dict[tuple[str, str], Owner]:
    """The owners of ``obj`` once patched: a field no longer there is no one's (a removal, or a map
    left empty and dropped), as kube-apiserver takes the fields an update removed from every manager."""
    out: dict[tuple[str, str], Owner] = {}
    for key, owner in owners.items():
        paths = frozenset(p for p in owner.paths if get_path(obj, p) is not MISSING)
        if paths:
            out[key] = owner if paths == owner.paths else replace(owner, paths=paths)
    return out
