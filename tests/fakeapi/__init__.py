"""A fake Kubernetes API server over real HTTP, faithful where the reconciler cares.

Used in-process by the integration tests, the fault soak and the benchmark,
and as a separate process by ``make run``::

    python -m tests.fakeapi --port 0 --state STATE.json --kubeconfig OUT --ready-file F

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

One module per concern: ``server`` (state, routing, lists, HTTP), ``ssa``
(managedFields, the apply merge, ownership, conflicts), ``validation`` (the
422 rules, name and label grammar), ``selectors``, ``faults``, ``nodes``
(:func:`make_node`), ``core`` (kinds, Status errors).
"""

from tests.fakeapi.core import APPLY_CONTENT_TYPE, JSON, FakeApiError, kind_of, reason_for, status_body
from tests.fakeapi.nodes import make_node
from tests.fakeapi.selectors import Requirement, SelectorError, parse_selector, selector_matches
from tests.fakeapi.server import FakeApiServer, Request, load_state
from tests.fakeapi.ssa import fields_v1, leaf_paths, paths_from_fields_v1
from tests.fakeapi.validation import (
    MAX_ENDPOINT_ADDRESSES,
    MAX_ENDPOINTS_ADDRESSES,
    MAX_SLICE_ENDPOINTS,
    MAX_SLICE_PORTS,
    is_dns1035_label,
    is_dns_label,
    is_dns_subdomain,
    is_label_value,
    is_qualified_name,
    validate,
)

__all__ = [
    "APPLY_CONTENT_TYPE",
    "JSON",
    "MAX_ENDPOINTS_ADDRESSES",
    "MAX_ENDPOINT_ADDRESSES",
    "MAX_SLICE_ENDPOINTS",
    "MAX_SLICE_PORTS",
    "FakeApiError",
    "FakeApiServer",
    "Request",
    "Requirement",
    "SelectorError",
    "fields_v1",
    "is_dns1035_label",
    "is_dns_label",
    "is_dns_subdomain",
    "is_label_value",
    "is_qualified_name",
    "kind_of",
    "leaf_paths",
    "load_state",
    "make_node",
    "parse_selector",
    "paths_from_fields_v1",
    "reason_for",
    "selector_matches",
    "status_body",
    "validate",
]
