"""One request to the API server, through the official client's ``ApiClient``.

Auth, TLS and proxies are as its kubeconfig loader set them up; the body
is read here, bounded (64 MiB, decompressed a step at a time). One
tenacity policy retries transient failures only (connection errors,
timeouts, 429, 5xx, unreadable bodies), honours ``Retry-After`` and never
sleeps past the run's :class:`Deadline`; every request's own timeout is cut
to what is left of it. Status codes become the run's exceptions, and each
distinct server ``Warning`` is logged once. It knows no kind of object.
"""

from __future__ import annotations

import http
import math
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import msgspec
import tenacity
import urllib3

from lib import interrupts, log
from lib.exitcodes import ApiUnavailable, ConfigError, Forbidden, ReconcileError
from lib.kube.decoding import JSON_CONTENT_TYPE, MalformedBody, api_object

#: A single request never waits longer than this, even early in a long run,
#: so one stuck connection leaves time for retries.
REQUEST_TIMEOUT_S = 15.0
#: How long past the deadline the SIGALRM backstop waits for the request
#: timeouts to end the run in the ordinary way first.
DEADLINE_GRACE_S = 0.25
#: A retry is only worth making with at least this long left before the deadline.
MIN_ATTEMPT_S = 0.5
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
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


def _phrase(status: int, reason: str) -> str:
    """The Status reason, else the HTTP reason phrase (a proxy's 404 page has no Status)."""
    if reason:
        return reason
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "HTTP error"


class HttpError(Exception):
    """A non-transient, non-auth error status; callers decide what it means."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        reason = _phrase(status, reason)
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


class _Transient(Exception):
    """Worth retrying: connection trouble, timeouts, 429, 5xx, unreadable bodies."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


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


class _StatusText(msgspec.Struct, frozen=True, gc=False):
    reason: str | None = None
    message: str | None = None


_STATUS = msgspec.json.Decoder(_StatusText)


def _status_text(body: bytes | bytearray | memoryview) -> tuple[str, str]:
    """(reason, message) of a kind: Status error body, best effort, each cut to 256 characters."""
    try:
        # Typed: the two strings alone are built, whatever else an error body holds.
        doc = _STATUS.decode(body)
        reason, message = doc.reason or "", doc.message or ""
    except (msgspec.MsgspecError, RecursionError):
        reason, message = "", bytes(body[:256]).decode("utf-8", "replace")
    return log.one_line(reason, 256), log.one_line(message, 256)


_TLS_FAILED = "TLS failure talking to the API server: "
#: What Go's net/http TLS server answers (400) to a plain-HTTP request.
_PLAIN_HTTP_TO_TLS = b"Client sent an HTTP request to an HTTPS server"
#: The 2xx answers a request of ours can have (200, 201 on create, 202 on delete).
_SUCCESS = {200, 201, 202}
#: No response body is read past this: a real node page of 500 nodes is ~10 MB.
MAX_RESPONSE_BYTES = 64 << 20
_CHUNK = 1 << 16


def _read_bounded(raw: Any, status: int) -> bytearray:
    """The body of ``raw`` (an unread urllib3 response), decoded, at most MAX_RESPONSE_BYTES.

    Read here in bounded steps, never whole: a 1 GB body stops at the cap,
    and urllib3 (2.6 and later) decompresses a gzip or deflate body at most
    a step at a time, so a 1 MB gzip bomb never expands past it either.
    """
    declared = raw.headers.get("Content-Length") or ""
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raw.close()
        raise _too_large(status)
    body = bytearray()
    try:
        while chunk := raw.read(_CHUNK, decode_content=True):
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise _too_large(status)
    except BaseException:
        raw.close()  # the rest of the body is never read: this connection is done
        raise
    raw.release_conn()
    return body


def _too_large(status: int) -> ApiUnavailable:
    # Not retried: the same request would fetch the same oversized body again.
    return ApiUnavailable(f"{status} response larger than {MAX_RESPONSE_BYTES >> 20} MiB: refused")


def _sleep(seconds: float) -> None:
    with interrupts.blocking():  # a backoff sleep ends at a signal
        time.sleep(seconds)


#: How :meth:`Transport.request` reads a 2xx body; :class:`MalformedBody` when it is not what was asked for.
Decode = Callable[[bytearray | memoryview], Any]
#: One warning of a ``Warning`` header (RFC 7234: code, agent, quoted text); kube-apiserver sends 299.
_WARNING = re.compile(r'\d{3} \S+ "((?:[^"\\]|\\.)*)"')


def warning_texts(header: str | None) -> list[str]:
    """The texts of a ``Warning`` header's warnings (several headers arrive joined by commas)."""
    return [re.sub(r"\\(.)", r"\1", text) for text in _WARNING.findall(header or "")]


class Transport:
    """Requests to the API server: each bounded by the run's deadline, retried while transient.

    It knows no kind of object: :class:`~lib.kube.api.Api` builds the calls
    a run makes on it.
    """

    def __init__(self, client: Any, deadline: Deadline, log: Any) -> None:
        self.client = client
        self.deadline = deadline
        self.log = log
        self.requests = 0
        self.warnings: set[str] = set()  # each server warning is logged once a run

    def _warned(self, header: str | None, method: str, path: str) -> None:
        """Log each distinct server warning (a deprecation, an unknown field) the first time it comes."""
        for text in warning_texts(header):
            if text not in self.warnings:
                self.warnings.add(text)
                self.log.warning("api_warning", warning=log.one_line(text, 300), request=f"{method} {path}")

    def _once(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        body: Body,
        content_type: str,
        decode: Decode,
        accept: str,
    ) -> Any:
        remaining = self.deadline.remaining()
        if remaining <= 0:
            raise ApiUnavailable(f"{method} {path}: deadline of {self.deadline.seconds:g}s reached")
        timeout = min(REQUEST_TIMEOUT_S, remaining)
        headers = {"Accept": accept}
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
            with interrupts.blocking():  # a signal may cut a wait on the network short
                resp = self.client.call_api(
                    method, url, header_params=headers, body=body, _request_timeout=timeout
                )
                status = int(resp.status)
                data = _read_bounded(resp.response, status)
                self._warned(resp.headers.get("Warning"), method, path)
        except urllib3.exceptions.SSLError as exc:
            raise ConfigError(_TLS_FAILED + log.one_line(str(exc), 300)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Transient(f"{type(exc).__name__}: {log.one_line(str(exc), 300)}") from None
        except (ReconcileError, _Transient):
            raise
        except Exception as exc:
            # The client wraps TLS failures in ApiException(status=0).
            if getattr(exc, "status", None) == 0 and "SSL" in str(getattr(exc, "reason", "")):
                raise ConfigError(_TLS_FAILED + log.one_line(str(exc), 300)) from None
            raise
        if status in _TRANSIENT_STATUS:
            reason, message = _status_text(data)
            raise _Transient(
                f"{status} {reason} {message}".strip(), _retry_after(resp.headers.get("Retry-After"))
            )
        if status >= 400:
            reason, message = _status_text(data)
            if status in (401, 403):
                raise Forbidden(f"{method} {path}: {status} {_phrase(status, reason)}: {message}".strip(": "))
            if status == 400 and bytes(data[:80]).startswith(_PLAIN_HTTP_TO_TLS):
                # Go's TLS server answers a plain-HTTP request so: no retry fixes a URL.
                raise ConfigError(
                    f"{method} {path}: the API server speaks TLS: its server URL in the kubeconfig must"
                    " start with https://, not http://"
                )
            raise HttpError(status, reason, message)
        if status not in _SUCCESS:
            # A redirect (the client follows none: it would resend the token
            # elsewhere), a 204 or another 2xx is no answer to our request:
            # counting it as one read an empty cluster, or a write that
            # stored nothing, as success.
            raise _Transient(f"unexpected {status} response ({len(data)} bytes)")
        try:
            return decode(data)
        except MalformedBody as exc:
            if exc.retry:
                raise _Transient(f"{status} response {exc}") from None
            raise ApiUnavailable(f"{method} {path}: {exc}") from None

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Body = None,
        content_type: str = JSON_CONTENT_TYPE,
        decode: Decode = api_object,
        accept: str = JSON_CONTENT_TYPE,
    ) -> Any:
        """One logical request, retried on transient failures until the deadline.

        ``decode`` reads a 2xx body (by default: an API object, one with
        ``metadata``); its :class:`MalformedBody` is retried like a 5xx when
        ``retry`` is set, else final.
        """
        query = query or {}
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            wait=self._wait,
            stop=self._stop,
            before_sleep=lambda rs: self._log_retry(method, path, rs),
            reraise=True,
            sleep=_sleep,
        )
        started = time.monotonic()
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(method, path, query, body, content_type, decode, accept)
        except _Transient as exc:
            tries = retrying.statistics.get("attempt_number", 1)
            late = ""
            if exc.retry_after is not None and exc.retry_after > self.deadline.remaining() - MIN_ATTEMPT_S:
                late = f"; the server asked to retry after {exc.retry_after:g}s, past the run's deadline"
            raise ApiUnavailable(
                f"{method} {path}: {exc} (after {tries} attempts in {time.monotonic() - started:.1f}s,"
                f" deadline {self.deadline.seconds:g}s{late})"
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
