"""Credentials: the official client's kubeconfig and in-cluster loading, made safe to fail.

--kubeconfig/--context, in-cluster config, or ~/.kube/config, in that
order (docs/behaviour.md "Security"). A kubeconfig is read with a size cap
and no YAML aliases of collections; errors name the file, the entry or path
to fix, and never a credential: the loader's own messages quote whole
entries, tokens included. A failing exec plugin is named, never its
output; a credential that is no valid header value is refused.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from lib import interrupts, log
from lib.exitcodes import ConfigError, ReconcileError


def load_client(kubeconfig: str | None, context: str | None, environ: Mapping[str, str]) -> Any:
    """An ``ApiClient`` from --kubeconfig/--context, in-cluster, or ~/.kube/config (in that order).

    Errors name the file and the kind of problem only, never its contents
    (docs/behaviour.md "Security"): the loader's own messages quote whole kubeconfig
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
    return log.one_line(text, 300)


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
