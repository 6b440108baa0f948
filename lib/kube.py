"""All Kubernetes API I/O: credentials, requests, retries, paging.

Requests go through the official client's ``ApiClient`` (auth, TLS, proxies,
exec plugins all as configured by its kubeconfig loader) but bodies are read
here, not by its generated models (5-10x the time and memory of
``json.loads`` on large Node lists): a list page is decoded by msgspec into
the caller's typed items, whatever else it holds skipped unbuilt (a tenth of
``json.loads``), and other bodies are split into members decoded only when
read. Lists are paged; no page builds more than its page size of items.
This module knows no Kubernetes kind: the caller gives the per-item
decoding (:class:`ListItems`). One tenacity policy retries transient
failures only, honours ``Retry-After`` and never sleeps past the run's
deadline; every request's own timeout is cut to what is left of it.
"""

from __future__ import annotations

import http
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import msgspec
import tenacity
import urllib3
from msgspec import UNSET, UnsetType

from lib import interrupts, log
from lib.exitcodes import ApiUnavailable, ConfigError, Forbidden, ReconcileError, UsageError, WriteRejected

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
#: Slices and Services a page: 100 slices of 100 endpoints are ~2 MB of JSON, a
#: page of 500 (all 300 slices at 15,000 nodes) was 6 MB held at once.
OBJECT_PAGE_SIZE = 100
#: A 410 on a continue token restarts the list; more restarts than this means
#: the cluster changes faster than we can list it.
MAX_LIST_RESTARTS = 3
#: Far above any real cluster (Kubernetes supports 5,000 nodes): a list
#: that goes on past this is a broken or hostile server, not a cluster.
MAX_NODES = 200_000
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
    return _one_line(reason)[:256], _one_line(message)[:256]


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


def _shape_problem(body: Mapping[str, Any], expect: str) -> str | None:
    if expect == "object" and not isinstance(body.get("metadata"), dict):
        return "not an object (no metadata)"
    # A delete answers with the object (now being deleted) or a Success Status.
    success = body.get("kind") == "Status" and body.get("status") == "Success"
    if expect == "deleted" and not success and not isinstance(body.get("metadata"), dict):
        return "neither the deleted object nor a Success Status"
    return None


def _sleep(seconds: float) -> None:
    with interrupts.blocking():  # a backoff sleep ends at a signal
        time.sleep(seconds)


def load_client(kubeconfig: str | None, context: str | None, environ: Mapping[str, str]) -> Any:
    """An ``ApiClient`` from --kubeconfig/--context, in-cluster, or ~/.kube/config (SPEC order).

    Errors name the file and the kind of problem only, never its contents
    (SPEC "Security"): the loader's own messages quote whole kubeconfig
    entries, tokens included, and YAML errors quote the offending line.
    """
    from kubernetes.client import ApiClient, Configuration
    from kubernetes.config import incluster_config

    cfg = Configuration()
    source = kubeconfig or ""
    contents: set[str] = set()  # every string of the kubeconfig, kept out of error messages
    plugin: list[str] = []
    try:
        # blocking(): a signal ends a hung exec plugin at once, not at the deadline.
        with interrupts.blocking(), _exec_errors_captured() as exec_errors:
            if kubeconfig:
                # KUBECONFIG may list several files (path-separated), as kubectl allows.
                _load_kubeconfig(kubeconfig, context, cfg, contents, plugin)
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
                        "no kubeconfig: set --kubeconfig or KUBECONFIG, run in-cluster,"
                        " or create ~/.kube/config"
                    )
                _load_kubeconfig(source, context, cfg, contents, plugin)
    except ReconcileError:
        raise  # ours, including the deadline's interrupt (Deadline.enforced): exit 4, not 3
    except Exception as exc:  # the loader raises ConfigException, YAML, OS and key errors alike
        raise ConfigError(f"cannot load {source}: {_config_problem(exc, contents)}") from None
    if exec_errors:
        raise ConfigError(_plugin_failed(source, plugin, exec_errors))
    _check_credential(cfg, source)
    hook = cfg.refresh_api_key_hook
    if hook is not None:
        # An exec credential with an expiry is fetched again by the client
        # before a request: the same guards apply to what it returns.
        def refresh(c: Any) -> None:
            with _exec_errors_captured() as errors:
                hook(c)
            # The loader's hook re-installs itself (and its untrimmed token).
            c.refresh_api_key_hook = refresh
            if errors:
                raise ConfigError(_plugin_failed(source, plugin, errors))
            _check_credential(c, source)

        cfg.refresh_api_key_hook = refresh
    # Our tenacity policy is the only retry layer: urllib3's default of three
    # silent retries would multiply every timeout past the run's deadline.
    cfg.retries = False
    cfg.client_go_retries = False
    return ApiClient(cfg)


#: A kubeconfig larger than this is refused unread (real ones are a few KB to
#: a few hundred KB, embedded certificates included).
MAX_KUBECONFIG_BYTES = 1 << 20
#: Keys whose values are credentials: never logged, wherever they appear.
_SECRET_KEYS = frozenset(
    {
        "token",
        "password",
        "client-key-data",
        "client-certificate-data",
        "id-token",
        "refresh-token",
        "access-token",
        "client-secret",
        "value",  # exec plugin env values (AWS keys and the like)
    }
)
#: Kubeconfig field names: they may appear in error messages ("missing key token").
_FIELD_NAMES = frozenset(
    {
        "apiVersion",
        "kind",
        "clusters",
        "contexts",
        "users",
        "current-context",
        "preferences",
        "name",
        "cluster",
        "context",
        "user",
        "namespace",
        "server",
        "certificate-authority",
        "certificate-authority-data",
        "insecure-skip-tls-verify",
        "tls-server-name",
        "proxy-url",
        "extensions",
        "extension",
        "token",
        "tokenFile",
        "username",
        "password",
        "client-certificate",
        "client-certificate-data",
        "client-key",
        "client-key-data",
        "exec",
        "auth-provider",
        "command",
        "args",
        "env",
        "value",
        "config",
    }
)


class _AliasRefused(Exception):
    """A YAML alias to a mapping or list: the "billion laughs" expansion."""


def _yaml_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        # Aliases of scalars are harmless; an alias of a collection lets a
        # 1 KB file expand to gigabytes once the loader prints or copies it.
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                anchor = self.peek_event().anchor  # type: ignore[no-untyped-call]
                if isinstance(self.anchors.get(anchor), yaml.CollectionNode):
                    raise _AliasRefused()
            return super().compose_node(parent, index)

    return Loader


def _read_kubeconfig(path: str) -> Any:
    """One kubeconfig file parsed, at most MAX_KUBECONFIG_BYTES, no collection aliases."""
    import yaml

    with open(path, "rb") as f:
        data = f.read(MAX_KUBECONFIG_BYTES + 1)
    if len(data) > MAX_KUBECONFIG_BYTES:
        raise ConfigError(f"cannot load {path}: larger than {MAX_KUBECONFIG_BYTES} bytes")
    try:
        return yaml.load(data, Loader=_yaml_loader())  # a SafeLoader
    except _AliasRefused:
        raise ConfigError(f"cannot load {path}: YAML aliases of mappings or lists are not allowed") from None


#: Where a kubeconfig holds names and paths, not credentials (keys from the
#: top, list indices skipped): these are shown in error messages, so that an
#: operator sees which entry or file to fix. Every other string is redacted.
_SHOWN = frozenset(
    {
        ("current-context",),
        ("clusters", "name"),
        ("contexts", "name"),
        ("users", "name"),
        ("clusters", "cluster", "certificate-authority"),
        ("contexts", "context", "cluster"),
        ("contexts", "context", "user"),
        ("contexts", "context", "namespace"),
        ("users", "user", "client-certificate"),
        ("users", "user", "client-key"),
        ("users", "user", "tokenFile"),
    }
)


def _hidden_strings(doc: Any, out: set[str], path: tuple[str, ...] = ()) -> None:
    """Collect the strings of a parsed kubeconfig an error message must not show.

    Credential values are also registered as secrets, for every log line.
    Names and paths (``_SHOWN``) are left out: they are what one fixes.
    """
    if len(path) > 50:
        return
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in _SECRET_KEYS and isinstance(value, str | int):
                log.add_secret(str(value))
            _hidden_strings(key, out, (*path, "#key"))
            _hidden_strings(value, out, (*path, str(key)))
    elif isinstance(doc, list):
        for item in doc:
            _hidden_strings(item, out, path)
    elif isinstance(doc, str | int | float) and not isinstance(doc, bool):
        text = str(doc)
        if len(text) >= 4 and text not in _FIELD_NAMES and path not in _SHOWN:
            out.add(text)


def _load_kubeconfig(
    paths: str, context: str | None, cfg: Any, contents: set[str], plugin: list[str]
) -> None:
    from kubernetes.config import kube_config

    for path in paths.split(kube_config.ENV_KUBECONFIG_PATH_SEPARATOR):
        path = os.path.expanduser(path)
        if path and os.path.exists(path):
            _hidden_strings(_read_kubeconfig(path), contents)
    # persist_config=False: the loader must never write the user's file back.
    loader = kube_config._get_kube_config_loader(  # type: ignore[no-untyped-call]
        filename=paths, active_context=context, persist_config=False
    )
    _check_user_entry(loader, paths)
    user = getattr(loader, "_user", None)
    command = user.value.get("exec", {}).get("command") if user is not None else None
    if isinstance(command, str):
        plugin.append(os.path.basename(command))  # its name, never its arguments
    loader.load_and_set(cfg)


def _check_user_entry(loader: Any, source: str) -> None:
    """A context naming a user with no users entry: the loader would go on with no credentials."""
    context = loader._current_context
    name = context["context"].safe_get("user")
    if not name:
        return
    users = loader._config["users"] if loader._config.safe_get("users") else None
    if users is None or users.get_with_name(name, safe=True) is None:
        raise ConfigError(
            f"cannot load {source}: context {context['name']} names user {name},"
            " which has no entry in users: add it, or fix the context's user"
        )


def _config_problem(exc: Exception, contents: set[str]) -> str:
    """The kind of problem a kubeconfig has, without quoting any of it."""
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        text = f"not valid YAML: {exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    elif isinstance(exc, yaml.YAMLError):
        text = "not valid YAML"
    elif isinstance(exc, OSError):
        text = exc.strerror or type(exc).__name__
    else:
        message = str(exc)
        key = re.search(r"Expected key (\S+) in ", message)
        named = re.search(r"Expected object with name (.*) in (\S+) list", message)
        if key:
            text = f"invalid kubeconfig: missing key {key.group(1)}"
        elif named:
            listed = named.group(2).rsplit("/", 1)[-1]  # the loader prefixes the file's path
            text = f"invalid kubeconfig: no {listed} entry named {named.group(1)}"
        elif type(exc).__name__ == "ConfigException":
            text = f"invalid kubeconfig: {message}"
        else:
            text = f"malformed kubeconfig ({type(exc).__name__}: {message})"
    for value in sorted(contents, key=len, reverse=True):
        text = text.replace(value, "<redacted>")
    return _one_line(text)


@contextmanager
def _exec_errors_captured() -> Iterator[list[str]]:
    """Keep the loader's own error logs (an exec plugin's failure, with its stderr) out of the log.

    The loader logs a failing exec credential plugin at error level, output
    and all, and carries on without credentials (the run would end in 401,
    pointing the operator at RBAC). The records are captured here instead.
    """
    captured: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        if record.pathname.endswith(("kube_config.py", "exec_provider.py")):
            captured.append(record.getMessage())
            return False
        return True

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield captured
    finally:
        root.removeFilter(keep)


def _plugin_failed(source: str, plugin: list[str], errors: list[str]) -> str:
    name = repr(plugin[0]) if plugin else "(unnamed)"
    first = errors[0]
    status = re.match(r"exec: process returned (-?\d+)", first)
    if status:
        kind = f"exited with status {status.group(1)}"
    elif first.startswith("exec: "):
        kind = "returned no usable credential"
    else:
        kind = "could not be run"
    return f"{source}: exec credential plugin {name} {kind} (its output is not shown)"


# A header value the client can send: printable ASCII, single spaces or tabs inside.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+([ \t]+[\x21-\x7e]+)*")


def _check_credential(cfg: Any, source: str) -> None:
    """Trim the token (as client-go does) and refuse one that is not a valid header value (exit 3)."""
    for name in ("BearerToken", "authorization"):
        value = cfg.api_key.get(name)
        if not isinstance(value, str):
            continue
        scheme, _, credential = value.strip().partition(" ")
        credential = credential.strip()
        log.add_secret(credential)
        header = f"{scheme} {credential}"
        if not credential or not _HEADER_VALUE.fullmatch(header):
            raise ConfigError(f"{source or 'kubeconfig'}: the credential is not a valid HTTP header value")
        cfg.api_key[name] = header


def remove_temp_files() -> None:
    """Remove the files the client decoded client keys and certificates into.

    The loader writes ``client-key-data`` and friends to ``$TMPDIR`` and
    removes them only at interpreter exit (``atexit``), which a signal skips.
    """
    kube_config = sys.modules.get("kubernetes.config.kube_config")
    if kube_config is not None:
        kube_config._cleanup_temp_files()


def _one_line(exc: BaseException | str) -> str:
    """One redacted line of at most 300 characters; an exception without text gives its type's name."""
    text = " ".join(str(exc).split())
    if not text and isinstance(exc, BaseException):
        text = type(exc).__name__
    return log.redact(text)[:300]


# --- typed list decoding -------------------------------------------------------

_I = TypeVar("_I")
_T = TypeVar("_T")
#: A response body's own reader, given to :meth:`Api.request` instead of ``json.loads``.
Decode = Callable[[bytearray | memoryview], Any]


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
    except msgspec.DecodeError:
        # A proxy's HTML error page or a cut-off body: worth another try.
        raise MalformedBody(f"is not JSON ({len(data)} bytes)", retry=True) from None
    except RecursionError:
        # "[[[[..." a hundred thousand deep: no API object nests like that.
        raise MalformedBody(f"nests too deep ({len(data)} bytes)", retry=True) from None
    meta = page.metadata
    found = msgspec.structs.astuple(page.items) if page.items is not None else ()
    items = [x for x in found if x is not UNSET]
    return ListPage(items, (meta.continue_ if meta else None) or "")


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
    at once; a member's value is built at each read, never kept: a
    read-only Mapping of plain JSON values. The slice list at 15,000 nodes
    is 7.5 MB of JSON, ~35 MB as dicts; held as bytes, each slice's
    endpoints exist only while they are looked at.
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
        except msgspec.DecodeError:
            # A proxy's HTML error page or a cut-off body: worth another try.
            raise MalformedBody(f"is not JSON ({len(data)} bytes)", retry=True) from None
        except RecursionError:
            # "[[[[..." a hundred thousand deep: no API object nests like that.
            raise MalformedBody(f"nests too deep ({len(data)} bytes)", retry=True) from None

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
_VERSIONS: ListItems[_Versioned, tuple[str, str]] = ListItems(
    _Versioned, lambda i: (i.metadata.name, i.metadata.resourceVersion), lambda v: v[0], METADATA_LIST
)

#: Items of the other lists (slices, Services): split into members, decoded when read.
_OBJECTS: ListItems[dict[str, msgspec.Raw], JsonObject] = ListItems(
    dict[str, msgspec.Raw], JsonObject.detached
)


#: One warning of a ``Warning`` header (RFC 7234: code, agent, quoted text); kube-apiserver sends 299.
_WARNING = re.compile(r'\d{3} \S+ "((?:[^"\\]|\\.)*)"')


def warning_texts(header: str | None) -> list[str]:
    """The texts of a ``Warning`` header's warnings (several headers arrive joined by commas)."""
    return [re.sub(r"\\(.)", r"\1", text) for text in _WARNING.findall(header or "")]


class Api:
    """The run's view of the API server: every request it makes goes through here."""

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
                self.log.warning("api_warning", warning=_one_line(text), request=f"{method} {path}")

    # --- one request -------------------------------------------------------

    def _once(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        body: Body,
        content_type: str,
        expect: str,
        decode: Decode | None = None,
        accept: str = JSON_CONTENT_TYPE,
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
            raise ConfigError(f"TLS failure talking to the API server: {_one_line(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Transient(f"{type(exc).__name__}: {_one_line(exc)}") from None
        except (ReconcileError, _Transient):
            raise
        except Exception as exc:
            # The client wraps TLS failures in ApiException(status=0).
            if getattr(exc, "status", None) == 0 and "SSL" in str(getattr(exc, "reason", "")):
                raise ConfigError(f"TLS failure talking to the API server: {_one_line(exc)}") from None
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
        if decode is not None:
            try:
                return decode(data)
            except MalformedBody as exc:
                if exc.retry:
                    raise _Transient(f"{status} response {exc}") from None
                raise ApiUnavailable(f"{method} {path}: {exc}") from None
        try:
            parsed = JsonObject.decode(data)
        except MalformedBody as exc:
            raise _Transient(f"{status} response {exc}") from None
        problem = _shape_problem(parsed, expect)
        if problem:
            raise _Transient(f"{status} response is {problem}")
        return parsed

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Body = None,
        content_type: str = JSON_CONTENT_TYPE,
        expect: str = "any",
        decode: Decode | None = None,
        accept: str = JSON_CONTENT_TYPE,
    ) -> Any:
        """One logical request, retried on transient failures until the deadline.

        ``expect``: what a 2xx body must be, else it is retried like a 5xx:
        "object" (has ``metadata``),
        "deleted" (an object or a Success Status) or "any" (a JSON object).
        ``decode``: read a 2xx body with this instead of ``json.loads``; its
        :class:`MalformedBody` is retried when ``retry`` is set, else final.
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
                    return self._once(method, path, query, body, content_type, expect, decode, accept)
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

    # --- the calls a run makes -----------------------------------------------

    def list_nodes(
        self, selector: str, items: ListItems[Any, _T], page_size: int | None = None
    ) -> tuple[list[_T], int]:
        """Every node (paged, ``PAGE_SIZE`` a page), converted page by page; (nodes, pages read).

        ``items`` is the caller's per-item decoding (this module knows no
        Node): each page is decoded straight into its typed items, the rest
        of every node skipped unbuilt. All or nothing: any failure raises,
        so a partial list is never used. A 410 on a continue token (the
        snapshot expired mid-list) restarts from the first page.
        """
        return self._list("/api/v1/nodes", "node", selector, items, page_size or PAGE_SIZE)

    def _list(
        self, path: str, kind: str, selector: str, items: ListItems[Any, _T], page_size: int
    ) -> tuple[list[_T], int]:
        for _ in range(MAX_LIST_RESTARTS + 1):
            try:
                return self._list_once(path, kind, selector, items, page_size)
            except _Restart:
                if kind == "node":
                    self.log.warning("node_list_restarted", reason="continue token expired (410)")
                else:
                    self.log.warning("list_restarted", kind=kind, reason="continue token expired (410)")
        raise ApiUnavailable(f"{kind} list restarted {MAX_LIST_RESTARTS} times on expired continue tokens")

    def _list_once(
        self, path: str, kind: str, selector: str, items: ListItems[Any, _T], page_size: int
    ) -> tuple[list[_T], int]:
        # Memory is bounded by one page, not by the cluster: a page of real
        # Nodes is ~10 MB of JSON, and only the converted items (a few
        # hundred bytes each) outlive it. Hence no generator here: a
        # suspended one, like a for-loop variable, would keep the previous
        # page alive while the next one is fetched and decoded.
        found: list[_T] = []
        token, pages = "", 0
        seen: set[str] = set()
        while True:
            page = self._page(path, kind, selector, page_size, token, items)
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
            if len(found) >= MAX_NODES:
                raise ApiUnavailable(f"{kind} list: more than {MAX_NODES} items, refused")
            seen.add(token)

    def _page(
        self,
        path: str,
        kind: str,
        selector: str,
        page_size: int,
        token: str,
        items: ListItems[Any, _T],
    ) -> ListPage[Any]:
        """One page of a list, decoded into ``items.item``."""
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
                raise _Restart() from None
            if exc.status in (400, 422) and selector and kind == "node":
                raise UsageError(f"--node-selector {selector!r} rejected by the API server: {exc}") from None
            raise ApiUnavailable(f"GET {path}: unexpected {exc}") from None
        return page

    def list(self, path: str, selector: str) -> list[Mapping[str, Any]]:
        """Every item of a namespaced list by label selector, paged like nodes; each a JsonObject."""
        kind = path.rsplit("/", 1)[-1].rstrip("s")  # "endpointslice", "service": for messages
        found, _ = self._list(path, kind, selector, _OBJECTS, OBJECT_PAGE_SIZE)
        return [*found]

    def versions(self, path: str, selector: str) -> dict[str, str]:
        """The resourceVersion of every object of a namespaced list by label selector, by name.

        Asked for as a PartialObjectMetadataList: each object's metadata
        alone (~1 KB a slice, not its ~25 KB). A server that sends the full
        list instead is read the same way.
        """
        kind = path.rsplit("/", 1)[-1].rstrip("s")
        found, _ = self._list(path, kind, selector, _VERSIONS, PAGE_SIZE)
        return dict(found)

    def get(self, path: str) -> Mapping[str, Any] | None:
        """An object, or None when it does not exist."""
        try:
            body = self.request("GET", path, expect="object")
        except HttpError as exc:
            if exc.status == 404:
                return None
            raise ApiUnavailable(f"GET {path}: unexpected {exc}") from None
        return body if isinstance(body, Mapping) else None

    def apply(self, path: str, body: bytes, field_manager: str, dry_run: bool) -> Mapping[str, Any]:
        """Server-side apply, forced: we are the only writer of these fields."""
        query = {"fieldManager": field_manager, "force": "true"}
        if dry_run:
            query["dryRun"] = "All"
        try:
            result = self.request("PATCH", path, query, body, APPLY_CONTENT_TYPE, expect="object")
        except HttpError as exc:
            raise _rejected(f"apply {path}", exc) from None
        return result if isinstance(result, Mapping) else {}

    def json_patch(self, path: str, ops: Sequence[Mapping[str, Any]], dry_run: bool) -> Mapping[str, Any]:
        """A JSON patch (RFC 6902); a failed ``test`` op is 422, a changed object's version 409."""
        query = {"dryRun": "All"} if dry_run else {}
        # A list, not bytes: the client re-labels any other JSON-patch body as a strategic merge patch.
        body = [dict(op) for op in ops]
        try:
            result = self.request("PATCH", path, query, body, JSON_PATCH_CONTENT_TYPE, expect="object")
        except HttpError as exc:
            if exc.status == 422:
                # The real server answers a failed "test" op with a bare 422 Invalid
                # ("the server rejected our request due to an error in our request"):
                # the object changed since we read it. Read and plan again.
                raise WriteConflict(
                    f"patch {path} rejected: {exc} (the object changed since it was read)"
                ) from None
            raise _rejected(f"patch {path}", exc) from None
        return result if isinstance(result, Mapping) else {}

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
            self.request("DELETE", path, {}, body, expect="deleted")
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
