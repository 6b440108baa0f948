"""Response bodies, read by msgspec, not the client's generated models (docs/performance.md).

A list page is decoded into the caller's typed items (whatever else it
holds skipped unbuilt), never more than the page size asked for. Other
bodies are split into members decoded only when read (:class:`JsonObject`).
What no API server sends is a :class:`MalformedBody`, retried or final.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from lib.exitcodes import ApiUnavailable

JSON_CONTENT_TYPE = "application/json"
_I = TypeVar("_I")
_T = TypeVar("_T")


class MalformedBody(ValueError):
    """A 2xx body that is not what was asked for.

    ``retry``: worth another request (not JSON, cut off, not a list: a proxy
    page, a dropped connection); otherwise an item no API server could have
    sent, final (exit 4 at once, as the same server would send it again).
    """

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class ListItems(Generic[_I, _T]):
    """How a caller wants a list's items: the per-item decoding :meth:`Api.list_nodes` takes.

    ``item``: a msgspec Struct declaring only the fields the caller reads
    (every other byte of an item is skipped unbuilt); ``convert``: the item
    to the caller's value, raising ValueError for what no API server sends;
    ``name``: the converted value's object name, when a list must never
    name one twice.
    """

    item: Any  # a type msgspec decodes into: a Struct, or dict[str, msgspec.Raw]
    convert: Callable[[_I], _T]
    name: Callable[[_T], str] | None = None
    accept: str = JSON_CONTENT_TYPE  # the representation asked for (Accept)
    restarted: str = "list_restarted"  # the event logged when the list starts again (a 410)


class _ListMeta(msgspec.Struct, frozen=True, gc=False):
    continue_: str | None = msgspec.field(default=None, name="continue")


@dataclass(frozen=True, slots=True)
class ListPage(Generic[_I]):
    """One decoded page of a list: its typed items and the continue token ("" on the last page)."""

    items: list[_I]
    continue_token: str


class _NameOnly(msgspec.Struct, frozen=True, gc=False):
    name: str


class _Named(msgspec.Struct, frozen=True, gc=False):
    metadata: _NameOnly


_DECODERS: dict[tuple[type, int, bool], msgspec.json.Decoder[Any]] = {}


def _decoder(item: type, limit: int, strict: bool) -> msgspec.json.Decoder[Any]:
    """A decoder of list pages holding at most ``limit`` ``item``s (made once per item type and limit).

    The items are decoded as msgspec's ``array_like`` Struct with one field
    per position, not as a list: a list is checked for its length only once
    all of it is built, so a hostile page of millions of tiny items (64 MiB
    of them fit under the response cap) would be built first (400 MB).
    ``strict``: an item past ``limit`` is an error at once; otherwise the
    rest of the array is skipped unbuilt.
    """
    key = (item, limit, strict)
    decoder = _DECODERS.get(key)
    if decoder is None:
        slots: list[tuple[str, Any, Any]] = [(f"i{k}", item | UnsetType, UNSET) for k in range(limit)]
        items = msgspec.defstruct(
            "Items", slots, array_like=True, forbid_unknown_fields=strict, frozen=True, gc=False
        )
        # "items": null is an empty page: kube-apiserver's metadata-only list of nothing says so.
        page = msgspec.defstruct(
            "Page", [("items", items | None), ("metadata", _ListMeta | None, None)], frozen=True, gc=False
        )
        decoder = _DECODERS[key] = msgspec.json.Decoder(page)
    return decoder


#: msgspec's validation messages: "Expected `str`, got `int` - at `$.items[3].metadata.name`".
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_ITEM_PATH = re.compile(r"^\.items\[(?P<index>\d+)\](?P<field>.*)$")
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_TOO_LONG = re.compile(r"Expected `array` of (at most )?length")
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_JSON_TYPES = {"array": "list", "object": "object"}


def decode_page(data: bytes | bytearray | memoryview, item: type[_I], limit: int, kind: str) -> ListPage[_I]:
    """A list body decoded into at most ``limit`` typed items.

    Else :class:`MalformedBody` naming the item (index, and name when every
    item before it has one) and the field. ``kind`` names the list's kind in
    messages.
    """
    try:
        page = _decoder(item, limit, True).decode(data)
    except msgspec.ValidationError as exc:
        raise _malformed(data, str(exc), kind, limit) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _unreadable(data, exc) from None
    meta = page.metadata
    found = msgspec.structs.astuple(page.items) if page.items is not None else ()
    items = [x for x in found if x is not UNSET]
    return ListPage(items, (meta.continue_ if meta else None) or "")


def _unreadable(data: bytes | bytearray | memoryview | msgspec.Raw, exc: Exception) -> MalformedBody:
    # A proxy's HTML error page, a cut-off body, or "[[[[..." a hundred
    # thousand deep (no API object nests like that): worth another try.
    what = "nests too deep" if isinstance(exc, RecursionError) else "is not JSON"
    return MalformedBody(f"{what} ({len(data)} bytes)", retry=True)


def _malformed(data: bytes | bytearray | memoryview, message: str, kind: str, limit: int) -> MalformedBody:
    at = _AT.match(message)
    what, path = (at.group("what"), at.group("path") or "") if at else (message, "")
    if _TOO_LONG.match(what):  # only the items array has a length limit (no path in this message)
        # Not retried: the same server would send as many again.
        return MalformedBody(
            f"malformed {kind} list: more than {limit} items on a page of {limit}", retry=False
        )
    expected, missing = _EXPECTED.search(what), _MISSING.search(what)
    item = _ITEM_PATH.match(path)
    field = (item.group("field") if item else path).lstrip(".")
    if missing:
        problem = f"no {field + '.' if field else ''}{missing.group('name')}"
    elif expected:
        got, want = expected.group("got"), expected.group("want")
        problem = f"{field or 'the item'} is a JSON {got}, not {want}"
    else:
        problem = f"{field or 'the item'}: {what}"
    if item is None:
        # The page itself: not a list at all (a proxy's answer, a Status): retried.
        if not path and expected:
            return MalformedBody(
                f"is a JSON {_JSON_TYPES.get(expected.group('got'), expected.group('got'))}, not an object",
                retry=True,
            )
        return MalformedBody(f"is not a list ({problem})", retry=True)
    index = int(item.group("index"))
    return MalformedBody(
        f"malformed {kind} list from the API server: item {index}{_item_name(data, index, kind)}: {problem}",
        retry=False,
    )


def _item_name(data: bytes | bytearray | memoryview, index: int, kind: str) -> str:
    """' (node "a")', the name of item ``index`` when it and every item before it have one; else ""."""
    # A second pass that reads names alone, of the items up to this one
    # (the rest skipped unbuilt), the error path only.
    try:
        page = _decoder(_Named, index + 1, False).decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return ""
    named = msgspec.structs.astuple(page.items)[index]
    return f" ({kind} {named.metadata.name[:100]!r})" if named is not UNSET else ""


_MEMBERS = msgspec.json.Decoder(dict[str, msgspec.Raw])
#: No member of an object is decoded past this: kube-apiserver refuses a
#: request body over 3 MiB (--max-request-bytes), so no stored object holds one.
MAX_MEMBER_BYTES = 3 << 20


class JsonObject(Mapping[str, Any]):
    """A JSON object from a response, each member decoded when read.

    The body is checked (valid JSON, an object) and split into its members
    at once; a member's value is built at each read, never kept: a live
    slice's endpoints exist as dicts only while they are looked at.
    """

    __slots__ = ("_members",)

    def __init__(self, members: dict[str, msgspec.Raw]) -> None:
        self._members = members

    @classmethod
    def detached(cls, members: dict[str, msgspec.Raw]) -> JsonObject:
        """A list item holding no part of its page (each Raw member of a page holds the whole page)."""
        return cls(
            {k: raw if len(raw) > MAX_MEMBER_BYTES else msgspec.Raw(bytes(raw)) for k, raw in members.items()}
        )

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | msgspec.Raw) -> JsonObject:
        """``data`` as a JsonObject; :class:`MalformedBody` (retry) when it is not one."""
        try:
            return cls(_MEMBERS.decode(data))
        except msgspec.ValidationError:
            raise MalformedBody(f"is a JSON {_json_type(data)}, not an object", retry=True) from None
        except (msgspec.DecodeError, RecursionError) as exc:
            raise _unreadable(data, exc) from None

    def __getitem__(self, key: str) -> Any:
        raw = self._members[key]
        if len(raw) > MAX_MEMBER_BYTES:
            # Decoded untyped, 3 MiB of "{}," would still be a million dicts.
            raise ApiUnavailable(
                f"a response member {key[:40]!r} of {len(raw)} bytes: larger than any API object"
            )
        try:
            return msgspec.json.decode(raw)
        except (msgspec.MsgspecError, RecursionError):
            # Checked as JSON when the body was split; only nesting can still fail.
            raise ApiUnavailable(f"a response member {key!r} nests too deep") from None

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"JsonObject({dict(self)!r})"


def api_object(data: bytes | bytearray | memoryview) -> JsonObject:
    """A body that must be an API object (it has ``metadata``): a GET's, an apply's or a patch's answer."""
    obj = JsonObject.decode(data)
    if not isinstance(obj.get("metadata"), dict):
        raise MalformedBody("is not an object (no metadata)", retry=True)
    return obj


def deleted(data: bytes | bytearray | memoryview) -> JsonObject:
    """A delete's answer: the object (now being deleted) or a Success Status."""
    obj = JsonObject.decode(data)
    success = obj.get("kind") == "Status" and obj.get("status") == "Success"
    if not success and not isinstance(obj.get("metadata"), dict):
        raise MalformedBody("is neither the deleted object nor a Success Status", retry=True)
    return obj


def _json_type(data: bytes | bytearray | memoryview | msgspec.Raw) -> str:
    first = bytes(memoryview(data)[:64]).lstrip()[:1]
    return {b"[": "list", b'"': "str", b"n": "null", b"t": "bool", b"f": "bool"}.get(first, "number")


class _Version(msgspec.Struct, frozen=True, gc=False):
    name: str
    resourceVersion: str = ""  # the API's field name


class _Versioned(msgspec.Struct, frozen=True, gc=False):
    metadata: _Version


#: kube-apiserver's content negotiation for "the metadata of each item only".
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
#: Each item's name and resourceVersion, from a metadata-only list.
VERSION_ITEMS: ListItems[_Versioned, tuple[str, str]] = ListItems(
    _Versioned, lambda i: (i.metadata.name, i.metadata.resourceVersion), lambda v: v[0], METADATA_LIST
)
#: Items of the other lists (slices, Services): split into members, decoded when read.
OBJECT_ITEMS: ListItems[dict[str, msgspec.Raw], JsonObject] = ListItems(
    dict[str, msgspec.Raw], JsonObject.detached
)
