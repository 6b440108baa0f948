"""The calls a run makes, on the transport: paged lists, get, apply, JSON patch, delete.

Lists are paged and all or nothing: each page is decoded straight into
the caller's typed items (:class:`~lib.kube.decoding.ListItems`, for nodes
given by ``lib/run.py`` from ``lib/nodes.py``) and dropped before the next
is fetched, so memory is bounded by one page, not by the cluster. A 410 on
a continue token restarts the list. Write answers map to exit codes:
409 is a :class:`WriteConflict` (read and plan again), other refusals
:class:`~lib.exitcodes.WriteRejected`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

from lib.exitcodes import ApiUnavailable, UsageError, WriteRejected
from lib.kube.decoding import OBJECT_ITEMS, VERSION_ITEMS, ListItems, ListPage, decode_page, deleted
from lib.kube.transport import APPLY_CONTENT_TYPE, JSON_PATCH_CONTENT_TYPE, HttpError, Transport

_T = TypeVar("_T")
#: Node list page size (kubectl's default); docs/performance.md "Page size".
PAGE_SIZE = 500
#: Slices and Services a page: a slice is far larger than a node (docs/performance.md).
OBJECT_PAGE_SIZE = 100
#: A 410 on a continue token restarts the list; more restarts than this means
#: the cluster changes faster than we can list it.
MAX_LIST_RESTARTS = 3
#: Far above any real cluster's objects of one kind (Kubernetes supports
#: 5,000 nodes): a list that goes on past this is a broken or hostile server.
MAX_ITEMS = 200_000


class Api(Transport):
    """The calls a run makes: lists (paged), get, apply, JSON patch, delete."""

    def list_nodes(
        self, selector: str, items: ListItems[Any, _T], page_size: int | None = None
    ) -> tuple[list[_T], int]:
        """Every node (``PAGE_SIZE`` a page), decoded by ``items`` (lib/nodes.py); (nodes, pages read).

        The user's ``--node-selector`` is the one selector the API server may
        refuse: that is a usage error, exit 2.
        """
        try:
            return self._list("/api/v1/nodes", "node", selector, items, page_size or PAGE_SIZE)
        except SelectorRejected as exc:
            reason = f"--node-selector {selector!r} rejected by the API server: {exc.answer}"
            raise UsageError(reason) from None

    def _list(
        self, path: str, kind: str, selector: str, items: ListItems[Any, _T], page_size: int
    ) -> tuple[list[_T], int]:
        # Memory is bounded by one page, not by the cluster: only the
        # converted items outlive their page (docs/performance.md). Hence no
        # generator here: a suspended one, like a for-loop variable, would
        # keep the previous page alive while the next one is fetched and decoded.
        found: list[_T] = []
        token, pages, restarts = "", 0, 0
        seen: set[str] = set()
        while True:
            page = self._page(path, kind, selector, page_size, token, items)
            if page is None:  # a 410 on a continue token: the list starts again
                self.log.warning(items.restarted, kind=kind, reason="continue token expired (410)")
                if restarts == MAX_LIST_RESTARTS:
                    raise ApiUnavailable(
                        f"{kind} list restarted {MAX_LIST_RESTARTS} times on expired continue tokens"
                    )
                restarts += 1
                found, token, pages, seen = [], "", 0, set()
                continue
            pages += 1
            for index, item in enumerate(page.items):
                try:
                    found.append(items.convert(item))
                except ValueError as exc:
                    raise ApiUnavailable(
                        f"malformed {kind} list from the API server: item {index} of page {pages}: {exc}"
                    ) from None
            token = page.continue_token
            del page  # drop this page before the next is fetched
            if not token:
                if items.name is not None:
                    _unique_names(kind, [items.name(x) for x in found])
                return found, pages
            # A server that repeats a continue token would have the run keep
            # every page until the deadline: end the list now instead.
            if token in seen:
                raise ApiUnavailable(f"{kind} list: the API server repeated a continue token (page {pages})")
            if len(found) >= MAX_ITEMS:
                raise ApiUnavailable(f"{kind} list: more than {MAX_ITEMS} items, refused")
            seen.add(token)

    def _page(
        self,
        path: str,
        kind: str,
        selector: str,
        page_size: int,
        token: str,
        items: ListItems[Any, _T],
    ) -> ListPage[Any] | None:
        """One page of a list, decoded into ``items.item``; None when its continue token expired (410)."""
        query = {"limit": str(page_size)}
        if selector:
            query["labelSelector"] = selector
        if token:
            query["continue"] = token
        try:
            page: ListPage[Any] = self.request(
                "GET",
                path,
                query,
                decode=lambda data: decode_page(data, items.item, page_size, kind),
                accept=items.accept,
            )
        except HttpError as exc:
            if exc.status == 410 and token:
                return None
            if exc.status in (400, 422) and selector:
                message = f"GET {path}: label selector {selector!r} rejected: {exc}"
                raise SelectorRejected(message, exc) from None
            raise ApiUnavailable(f"GET {path}: unexpected {exc}") from None
        return page

    def list(self, path: str, selector: str) -> list[Mapping[str, Any]]:
        """Every item of a namespaced list by label selector, paged like nodes; each a JsonObject."""
        kind = path.rsplit("/", 1)[-1].rstrip("s")  # "endpointslice", "service": for messages
        found, _ = self._list(path, kind, selector, OBJECT_ITEMS, OBJECT_PAGE_SIZE)
        return [*found]

    def versions(self, path: str, selector: str) -> dict[str, str]:
        """The resourceVersion of every object of a namespaced list by label selector, by name.

        Asked for as a PartialObjectMetadataList (each object's metadata
        alone); a server that sends the full list instead is read the same way.
        """
        kind = path.rsplit("/", 1)[-1].rstrip("s")
        found, _ = self._list(path, kind, selector, VERSION_ITEMS, PAGE_SIZE)
        return dict(found)

    def get(self, path: str) -> Mapping[str, Any] | None:
        """An object, or None when it does not exist."""
        try:
            obj: Mapping[str, Any] = self.request("GET", path)
        except HttpError as exc:
            if exc.status == 404:
                return None
            raise ApiUnavailable(f"GET {path}: unexpected {exc}") from None
        return obj

    def apply(self, path: str, body: bytes, field_manager: str, dry_run: bool) -> Mapping[str, Any]:
        """Server-side apply, forced: we are the only writer of these fields."""
        query = {"fieldManager": field_manager, "force": "true"}
        if dry_run:
            query["dryRun"] = "All"
        try:
            obj: Mapping[str, Any] = self.request("PATCH", path, query, body, APPLY_CONTENT_TYPE)
        except HttpError as exc:
            raise _rejected(f"apply {path}", exc) from None
        return obj

    def json_patch(self, path: str, ops: Sequence[Mapping[str, Any]], dry_run: bool) -> Mapping[str, Any]:
        """A JSON patch (RFC 6902); a failed ``test`` op is 422, a changed object's version 409."""
        query = {"dryRun": "All"} if dry_run else {}
        # A list, not bytes: the client re-labels any other JSON-patch body as a strategic merge patch.
        body = [dict(op) for op in ops]
        try:
            obj: Mapping[str, Any] = self.request("PATCH", path, query, body, JSON_PATCH_CONTENT_TYPE)
        except HttpError as exc:
            if exc.status == 422:
                # The real server answers a failed "test" op with a bare 422 Invalid
                # ("the server rejected our request due to an error in our request"):
                # the object changed since we read it. Read and plan again.
                raise WriteConflict(
                    f"patch {path} rejected: {exc} (the object changed since it was read)"
                ) from None
            raise _rejected(f"patch {path}", exc) from None
        return obj

    def delete(self, path: str, dry_run: bool, resource_version: str | None = None) -> None:
        """Delete an object, only if still at ``resource_version`` when given; one already gone is fine."""
        # Everything in the DeleteOptions body: when a DELETE has a body, the
        # API server reads its options from the body alone and ignores the
        # query, so a dryRun=All query beside a preconditions body deletes for
        # real (seen on kube-apiserver v1.24; handlers/delete.go).
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if dry_run:
            body["dryRun"] = ["All"]
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        try:
            self.request("DELETE", path, {}, body, decode=deleted)
        except HttpError as exc:
            if exc.status != 404:
                raise _rejected(f"delete {path}", exc) from None


def _unique_names(kind: str, names: list[str]) -> None:
    # One list snapshot never names an object twice; a list that does is not
    # one a real API server sent, and publishing both would be guessing.
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ApiUnavailable(f"malformed {kind} list: {kind} {name[:100]!r} listed twice")
        seen.add(name)


class WriteConflict(WriteRejected):
    """409 on a write: the object changed since it was read (not an IP claimed by two nodes)."""


def _rejected(what: str, exc: HttpError) -> WriteRejected:
    cls = WriteConflict if exc.status == 409 else WriteRejected
    return cls(f"{what} rejected: {exc}")


class SelectorRejected(ApiUnavailable):
    """A list's label selector refused (400 or 422): exit 4 unless the caller knows it is the user's."""

    def __init__(self, message: str, answer: HttpError) -> None:
        super().__init__(message)
        self.answer = answer


def object_path(kind: str, namespace: str, name: str = "") -> str:
    """The REST path of one of our kinds (a collection when ``name`` is empty)."""
    base = {
        "Service": "/api/v1/namespaces/{ns}/services",
        "Endpoints": "/api/v1/namespaces/{ns}/endpoints",
        "EndpointSlice": "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
    }[kind].format(ns=quote(namespace, safe=""))
    return f"{base}/{quote(name, safe='')}" if name else base
