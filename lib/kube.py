"""All Kubernetes API I/O: credentials, requests, retries, paging.

Requests go through the official client's ``ApiClient`` (auth, TLS, proxies,
exec plugins all as configured by its kubeconfig loader) but bodies are read
as raw JSON: the generated models cost 5-10x the time and memory of
``json.loads`` on large Node lists. One tenacity policy retries transient
failures only, honours ``Retry-After`` and never sleeps past the run's
deadline; every request's own timeout is cut to what is left of it.
"""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import tenacity
import urllib3

from lib.exitcodes import ApiUnavailable, ConfigError, Forbidden, ReconcileError, UsageError, WriteRejected
from lib.nodes import MalformedNode, NodeInfo, slim

#: A single request never waits longer than this, even early in a long run,
#: so one stuck connection leaves time for retries.
REQUEST_TIMEOUT_S = 15.0
#: How long past the deadline the SIGALRM backstop waits for the request
#: timeouts to end the run in the ordinary way first.
DEADLINE_GRACE_S = 0.25
#: A retry is only worth making with at least this long left before the deadline.
MIN_ATTEMPT_S = 0.5
#: Node list page size (kubectl's default); see the README's performance section.
PAGE_SIZE = 500
#: A 410 on a continue token restarts the list; more restarts than this means
#: the cluster changes faster than we can list it.
MAX_LIST_RESTARTS = 3
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
JSON_CONTENT_TYPE = "application/json"
JSON_PATCH_CONTENT_TYPE = "application/json-patch+json"
_TRANSIENT_STATUS = {429} | set(range(500, 600))
#: A request body: bytes are sent as they are (apply bodies, already encoded
#: byte-stable); a dict or list is JSON-encoded by the client (delete options, JSON patches).
Body = bytes | dict[str, Any] | list[dict[str, Any]] | None


class Deadline:
    """The run's hard deadline on the monotonic clock."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    @contextmanager
    def enforced(self, grace: float = DEADLINE_GRACE_S) -> Iterator[None]:
        """Interrupt whatever still runs at the deadline (plus ``grace``).

        The backstop behind the per-request timeouts: a socket timeout bounds
        each read, not a whole response, so a server trickling one byte a
        second could otherwise hold the run past its deadline and into the
        next one. SIGALRM works in the main thread only; elsewhere (tests
        running the reconciler in threads) only the request timeouts apply.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_alarm(_signum: int, _frame: Any) -> None:
            raise ApiUnavailable(f"deadline of {self.seconds:g}s reached")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(0.001, self.remaining() + grace))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


class HttpError(Exception):
    """A non-transient, non-auth error status; callers decide what it means."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


class _Transient(Exception):
    """Worth retrying: connection trouble, timeouts, 429, 5xx, unreadable bodies."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Response:
    status: int
    body: Any  # parsed JSON


def _retry_after(raw: str | None) -> float | None:
    # Seconds or an HTTP date (RFC 9110 10.2.3); anything else: our own backoff.
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _status_text(body: bytes) -> tuple[str, str]:
    """(reason, message) of a kind: Status error body, best effort."""
    try:
        doc = json.loads(body)
        return str(doc.get("reason") or ""), str(doc.get("message") or "")
    except (ValueError, AttributeError):
        return "", body[:200].decode("utf-8", "replace").strip()


def load_client(kubeconfig: str | None, context: str | None, environ: Mapping[str, str]) -> Any:
    """An ``ApiClient`` from --kubeconfig/--context, in-cluster, or ~/.kube/config (SPEC order)."""
    from kubernetes.client import ApiClient, Configuration
    from kubernetes.config import incluster_config, kube_config

    cfg = Configuration()
    source = kubeconfig or ""
    try:
        if kubeconfig:
            # KUBECONFIG may list several files (path-separated), as kubectl allows.
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=cfg
            )
        elif environ.get("KUBERNETES_SERVICE_HOST"):
            source = "in-cluster config"
            if context:
                raise ConfigError("--context needs a kubeconfig; in-cluster config has no contexts")
            incluster_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            home = environ.get("HOME") or os.path.expanduser("~")
            source = os.path.join(home, ".kube", "config")
            if not os.path.exists(source):
                raise ConfigError(
                    "no kubeconfig: set --kubeconfig or KUBECONFIG, run in-cluster, or create ~/.kube/config"
                )
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=source, context=context, client_configuration=cfg
            )
    except ReconcileError:
        raise  # ours, including the deadline's interrupt (Deadline.enforced): exit 4, not 3
    except Exception as exc:  # the loader raises ConfigException, YAML, OS and key errors alike
        raise ConfigError(f"cannot load {source}: {_one_line(exc)}") from None
    # Our tenacity policy is the only retry layer: urllib3's default of three
    # silent retries would multiply every timeout past the run's deadline.
    cfg.retries = False
    cfg.client_go_retries = False
    return ApiClient(cfg)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


class Api:
    """The run's view of the API server: every request it makes goes through here."""

    def __init__(self, client: Any, deadline: Deadline, log: Any) -> None:
        self.client = client
        self.deadline = deadline
        self.log = log
        self.requests = 0

    # --- one request -------------------------------------------------------

    def _once(
        self, method: str, path: str, query: Mapping[str, str], body: Body, content_type: str
    ) -> Response:
        remaining = self.deadline.remaining()
        if remaining <= 0:
            raise ApiUnavailable(f"{method} {path}: deadline of {self.deadline.seconds:g}s reached")
        timeout = min(REQUEST_TIMEOUT_S, remaining)
        headers = {"Accept": JSON_CONTENT_TYPE}
        if body is not None:
            headers["Content-Type"] = content_type
        _, url, headers, _, _ = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query.items()) or None,
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        self.requests += 1
        try:
            resp = self.client.call_api(
                method, url, header_params=headers, body=body, _request_timeout=timeout
            )
            data = resp.read()
        except urllib3.exceptions.SSLError as exc:
            raise ConfigError(f"TLS failure talking to the API server: {_one_line(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Transient(f"{type(exc).__name__}: {_one_line(exc)}") from None
        except Exception as exc:
            # The client wraps TLS failures in ApiException(status=0).
            if getattr(exc, "status", None) == 0 and "SSL" in str(getattr(exc, "reason", "")):
                raise ConfigError(f"TLS failure talking to the API server: {_one_line(exc)}") from None
            raise
        status = int(resp.status)
        if status in _TRANSIENT_STATUS:
            reason, message = _status_text(data)
            raise _Transient(
                f"{status} {reason} {message}".strip(), _retry_after(resp.headers.get("Retry-After"))
            )
        if status >= 400:
            reason, message = _status_text(data)
            if status in (401, 403):
                raise Forbidden(f"{method} {path}: {status} {reason or 'Forbidden'}: {message}".strip(": "))
            raise HttpError(status, reason, message)
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            # A proxy's HTML error page or a cut-off body: worth another try.
            raise _Transient(f"{status} response is not JSON ({len(data)} bytes)") from None
        return Response(status, parsed)

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Body = None,
        content_type: str = JSON_CONTENT_TYPE,
    ) -> Response:
        """One logical request, retried on transient failures until the deadline."""
        query = query or {}
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            wait=self._wait,
            stop=self._stop,
            before_sleep=lambda rs: self._log_retry(method, path, rs),
            reraise=True,
            sleep=time.sleep,
        )
        started = time.monotonic()
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(method, path, query, body, content_type)
        except _Transient as exc:
            tries = retrying.statistics.get("attempt_number", 1)
            raise ApiUnavailable(
                f"{method} {path}: {exc} (after {tries} attempts in {time.monotonic() - started:.1f}s,"
                f" deadline {self.deadline.seconds:g}s)"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    _backoff = tenacity.wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2)

    def _wait(self, rs: tenacity.RetryCallState) -> float:
        # After the sleep, an attempt needs MIN_ATTEMPT_S of its own. Our own
        # backoff shrinks to fit (one last attempt); the server's Retry-After
        # is honoured or not at all. Infinity means: no time left, stop.
        room = self.deadline.remaining() - MIN_ATTEMPT_S
        backoff = min(float(self._backoff(rs)), room)
        exc = rs.outcome.exception() if rs.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            # A floor, not the whole wait: "Retry-After: 0" on every answer
            # would otherwise make one run a retry storm (hundreds a second).
            return max(exc.retry_after, backoff) if exc.retry_after <= room else math.inf
        return backoff if room > 0 else math.inf

    def _stop(self, rs: tenacity.RetryCallState) -> bool:
        return math.isinf(rs.upcoming_sleep)

    def _log_retry(self, method: str, path: str, rs: tenacity.RetryCallState) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        self.log.warning(
            "api_retry",
            method=method,
            path=path,
            attempt=rs.attempt_number,
            error=str(exc),
            sleep_s=round(rs.upcoming_sleep, 3),
        )

    # --- the calls a run makes -----------------------------------------------

    def list_nodes(self, selector: str, page_size: int | None = None) -> tuple[list[NodeInfo], int]:
        """Every node (paged, ``PAGE_SIZE`` a page), slimmed page by page; (nodes, pages read).

        All or nothing: any failure raises, so a partial list is never used.
        A 410 on a continue token (the snapshot expired mid-list) restarts
        from the first page.
        """
        size = page_size or PAGE_SIZE
        for _ in range(MAX_LIST_RESTARTS + 1):
            try:
                return self._list_nodes_once(selector, size)
            except _Restart:
                self.log.warning("node_list_restarted", reason="continue token expired (410)")
            except MalformedNode as exc:
                raise ApiUnavailable(f"malformed node list from the API server: {exc}") from None
        raise ApiUnavailable(f"node list restarted {MAX_LIST_RESTARTS} times on expired continue tokens")

    def _list_nodes_once(self, selector: str, page_size: int) -> tuple[list[NodeInfo], int]:
        # Memory is bounded by one page, not by the cluster: a page of real
        # Nodes is ~10 MB of JSON and ~40 MB parsed, and only its NodeInfos
        # (a few hundred bytes each) outlive it. Hence no generator here: a
        # suspended one, like a for-loop variable, would keep the previous
        # page alive while the next one is fetched and parsed.
        nodes: list[NodeInfo] = []
        token, pages = "", 0
        while True:
            with _gc_paused():
                items, token = self._node_page(selector, page_size, token)
                pages += 1
                nodes.extend(map(slim, items))
                del items  # drop this page before the next is fetched
            if not token:
                return nodes, pages

    def _node_page(self, selector: str, page_size: int, token: str) -> tuple[list[Any], str]:
        """One page of the node list: (its raw items, the continue token or "")."""
        query = {"limit": str(page_size)}
        if selector:
            query["labelSelector"] = selector
        if token:
            query["continue"] = token
        try:
            page = self.request("GET", "/api/v1/nodes", query).body
        except HttpError as exc:
            if exc.status == 410 and token:
                raise _Restart() from None
            if exc.status in (400, 422) and selector:
                raise UsageError(f"--node-selector {selector!r} rejected by the API server: {exc}") from None
            raise ApiUnavailable(f"GET /api/v1/nodes: unexpected {exc}") from None
        if not isinstance(page, dict) or not isinstance(page.get("items", []), list):
            raise ApiUnavailable("malformed node list from the API server: no items list")
        meta = page.get("metadata")
        following = meta.get("continue") if isinstance(meta, dict) else None
        return page.get("items") or [], str(following or "")

    def get(self, path: str) -> dict[str, Any] | None:
        """An object, or None when it does not exist."""
        try:
            body = self.request("GET", path).body
        except HttpError as exc:
            if exc.status == 404:
                return None
            raise ApiUnavailable(f"GET {path}: unexpected {exc}") from None
        return body if isinstance(body, dict) else None

    def list(self, path: str, selector: str) -> list[dict[str, Any]]:
        """All items of a (small) namespaced list, by label selector."""
        try:
            body = self.request("GET", path, {"labelSelector": selector}).body
        except HttpError as exc:
            raise ApiUnavailable(f"GET {path}: unexpected {exc}") from None
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ApiUnavailable(f"GET {path}: malformed list from the API server")
        return [item for item in items if isinstance(item, dict)]

    def apply(self, path: str, body: bytes, field_manager: str, dry_run: bool) -> dict[str, Any]:
        """Server-side apply, forced: we are the only writer of these fields."""
        query = {"fieldManager": field_manager, "force": "true"}
        if dry_run:
            query["dryRun"] = "All"
        try:
            result = self.request("PATCH", path, query, body, APPLY_CONTENT_TYPE).body
        except HttpError as exc:
            raise _rejected(f"apply {path}", exc) from None
        return result if isinstance(result, dict) else {}

    def json_patch(self, path: str, ops: Sequence[Mapping[str, Any]], dry_run: bool) -> dict[str, Any]:
        """A JSON patch (RFC 6902); a failed ``test`` op is 422, a changed object's version 409."""
        query = {"dryRun": "All"} if dry_run else {}
        # A list, not bytes: the client re-labels any other JSON-patch body as a strategic merge patch.
        body = [dict(op) for op in ops]
        try:
            result = self.request("PATCH", path, query, body, JSON_PATCH_CONTENT_TYPE).body
        except HttpError as exc:
            if exc.status == 422:
                # The real server answers a failed "test" op with a bare 422 Invalid
                # ("the server rejected our request due to an error in our request"):
                # the object changed since we read it. Read and plan again.
                raise WriteConflict(
                    f"patch {path} rejected: {exc} (the object changed since it was read)"
                ) from None
            raise _rejected(f"patch {path}", exc) from None
        return result if isinstance(result, dict) else {}

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
            self.request("DELETE", path, {}, body)
        except HttpError as exc:
            if exc.status != 404:
                raise _rejected(f"delete {path}", exc) from None


class WriteConflict(WriteRejected):
    """409 on a write: the object changed since it was read (not an IP claimed by two nodes)."""


def _rejected(what: str, exc: HttpError) -> WriteRejected:
    cls = WriteConflict if exc.status == 409 else WriteRejected
    return cls(f"{what} rejected: {exc}")


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while one node page is read, slimmed and dropped.

    ``json.loads`` of a page allocates millions of containers; every 700
    allocations trigger a collection, and the repeated walks over the
    half-built page (then over the parsed page, once the collector is back
    while it is still alive) cost more than the parse itself: about 40% of a
    15,000-node run (README "Performance"). Parsed JSON holds no reference
    cycles and the page is freed by reference counting, so the pause delays
    no memory.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Restart(Exception):
    """The node list must start again from the first page."""


def object_path(kind: str, namespace: str, name: str = "") -> str:
    """The REST path of one of our kinds (a collection when ``name`` is empty)."""
    base = {
        "Service": "/api/v1/namespaces/{ns}/services",
        "Endpoints": "/api/v1/namespaces/{ns}/endpoints",
        "EndpointSlice": "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
    }[kind].format(ns=quote(namespace, safe=""))
    return f"{base}/{quote(name, safe='')}" if name else base
