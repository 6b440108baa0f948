"""What every part of the fake shares: JSON types, the kinds it serves, Status errors and replies."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

JSON = dict[str, Any]
FieldPath = tuple[str, ...]

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"

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

MISSING: Any = object()


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
    }
    # An empty reason is left out, as kube-apiserver does for some 500s.
    if reason != "":
        doc["reason"] = reason if reason is not None else reason_for(code)
    if details:
        doc["details"] = details
    doc["code"] = code
    return doc


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeApiError(Exception):
    """An API error: the HTTP status and the Status document to answer with."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: JSON | None = None
    ) -> None:
        super().__init__(f"{code} {reason or reason_for(code)}: {message}")
        self.code = code
        self.reason = reason_for(code) if reason is None else reason
        self.message = message
        self.details = details

    def status(self) -> JSON:
        """The ``kind: Status`` body."""
        return status_body(self.code, self.message, self.reason, self.details)


@dataclass
class Reply:
    """An HTTP answer: status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def error_reply(exc: FakeApiError) -> Reply:
    """The reply carrying an error's Status body."""
    return Reply(exc.code, dumps(exc.status()))


# --- the kinds served -------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A kind the fake serves, and where."""

    kind: str
    api_version: str
    plural: str
    prefix: str  # REST path prefix

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


KINDS = {
    k.kind: k
    for k in (
        Kind("Service", "v1", "services", "/api/v1"),
        Kind("Endpoints", "v1", "endpoints", "/api/v1"),
        Kind("EndpointSlice", "discovery.k8s.io/v1", "endpointslices", "/apis/discovery.k8s.io/v1"),
    )
}
ROUTES = {(k.prefix, k.plural): k for k in KINDS.values()}
NS_PATH = re.compile(r"(/api/v1|/apis/discovery\.k8s\.io/v1)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?")
NODE_PATH = re.compile(r"/api/v1/nodes/([^/]+)")


def kind_of(name: str) -> Kind:
    """The kind named by its kind, plural or lower-case name (ValueError for any other)."""
    for kind in KINDS.values():
        if name in (kind.kind, kind.plural, kind.kind.lower()):
            return kind
    raise ValueError(f"unknown kind {name!r}: one of {', '.join(KINDS)} (or Node)")


def not_found(kind: Kind, name: str) -> FakeApiError:
    """The 404 of a missing object."""
    return FakeApiError(
        404, f'{kind.resource} "{name}" not found', details=status_details(kind, name, kind.plural)
    )


def status_details(kind: Kind, name: str | None, what: str) -> JSON:
    """A Status's ``details``: name, group (left out for the core group, as the API server does), kind."""
    details: JSON = {} if name is None else {"name": name}
    if kind.group:
        details["group"] = kind.group
    details["kind"] = what
    return details
