"""A real kube-apiserver and etcd on 127.0.0.1, for the real-server test tier.

The envtest idea (controller-runtime): the two binaries from a directory
named by ``KUBEBUILDER_ASSETS``, a fresh PKI made with ``openssl``, a token
file with an administrator (``system:masters``) and a user with no rights,
RBAC on, and ``OwnerReferencesPermissionEnforcement`` enabled (as OpenShift
has it). No kubelet, no controllers: nothing is garbage-collected and no
EndpointSlice is mirrored, which is what these tests want.

Started once per test session (``tests/conftest.py``) and stopped by PID,
process group and all, even when a test fails or the session is interrupted.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from tests.fakeapi.versions import server_minor

ASSETS_ENV = "KUBEBUILDER_ASSETS"
BINARIES = ("etcd", "kube-apiserver")
START_TIMEOUT_S = 90.0
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
ADMIN_USER = "admin"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
NOBODY_USER = "nobody"


def assets_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """The directory with ``etcd`` and ``kube-apiserver``, or None when there is none."""
    env = os.environ if environ is None else environ
    d = env.get(ASSETS_ENV, "")
    if d and all(os.access(os.path.join(d, b), os.X_OK) for b in BINARIES):
        return d
    return None


class RealServerError(RuntimeError):
    """The real server could not be started (its log's tail in the message)."""


@dataclass
class Reply:
    """One answer of the real server: status, parsed JSON body (or None), headers."""

    status: int
    body: Any
    headers: Mapping[str, str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost, and a service-account key pair."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=test-ca", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=kube-apiserver", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=d)  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


class RealApiServer:
    """etcd + kube-apiserver as child processes; :meth:`start`, then :meth:`stop`."""

    def __init__(self, assets: str, workdir: str | None = None) -> None:
        self.assets = assets
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="real-apiserver-"))
        self.admin_token = uuid.uuid4().hex
        self.nobody_token = uuid.uuid4().hex
        self.port = 0
        self._procs: list[subprocess.Popen[bytes]] = []
        self._ctx: ssl.SSLContext | None = None

    # --- life cycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> str:
        return str(self.dir / "ca.crt")

    def start(self) -> RealApiServer:
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        make_pki(self.dir)
        (self.dir / "tokens.csv").write_text(
            f'{self.admin_token},{ADMIN_USER},1,"system:masters"\n{self.nobody_token},{NOBODY_USER},2\n'
        )
        client, peer = _free_port(), _free_port()
        etcd = self._spawn(
            "etcd",
            ["--name", "x", "--data-dir", str(self.dir / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"x=http://127.0.0.1:{peer}"],
        )  # fmt: skip
        self._wait(etcd, "etcd", lambda: _http_ok(f"http://127.0.0.1:{client}/health"))
        self.port = _free_port()
        d = self.dir
        api = self._spawn(
            "kube-apiserver",
            ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
             f"--etcd-servers=http://127.0.0.1:{client}",
             f"--tls-cert-file={d / 'server.crt'}", f"--tls-private-key-file={d / 'server.key'}",
             f"--client-ca-file={d / 'ca.crt'}", f"--token-auth-file={d / 'tokens.csv'}",
             "--authorization-mode=Node,RBAC",
             "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
             "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
             f"--service-account-key-file={d / 'sa.pub'}",
             f"--service-account-signing-key-file={d / 'sa.key'}",
             "--api-audiences=https://kubernetes.default.svc.cluster.local",
             "--service-cluster-ip-range=10.96.0.0/16", "--endpoint-reconciler-type=none",
             "--profiling=false"],
        )  # fmt: skip
        self._wait(api, "kube-apiserver", self._ready)
        # The namespaces the API server makes itself, at start-up, a moment after /readyz.
        self._wait(api, "kube-apiserver", lambda: self.get("/api/v1/namespaces/kube-system").status == 200)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 (kept open for the child's life)
        proc = subprocess.Popen(
            [os.path.join(self.assets, name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
            start_new_session=True,  # its own process group: stop() kills it whole
            preexec_fn=_die_with_parent,
        )
        log.close()
        self._procs.append(proc)
        return proc

    def _wait(self, proc: subprocess.Popen[bytes], name: str, ready: Any) -> None:
        end = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RealServerError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            with contextlib.suppress(OSError, ValueError):
                if ready():
                    return
            time.sleep(0.2)
        raise RealServerError(f"{name} not ready after {START_TIMEOUT_S:g}s:\n{self.log_tail(name)}")

    def _ready(self) -> bool:
        return self.request("GET", "/readyz").status == 200

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            text = (self.dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop both processes by PID (their process groups), then remove the work directory."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        self._procs.clear()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- clients --------------------------------------------------------------

    def write_kubeconfig(self, path: str | os.PathLike[str], *, token: str | None = None) -> str:
        """A kubeconfig (context "real") for this server with ``token`` (the admin's by default)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "real", "cluster": {"server": self.url, "certificate-authority": self.ca_file}}
            ],
            "users": [{"name": "real", "user": {"token": token or self.admin_token}}],
            "contexts": [{"name": "real", "context": {"cluster": "real", "user": "real"}}],
            "current-context": "real",
        }
        Path(path).write_text(json.dumps(config, indent=2) + "\n")
        return os.fspath(path)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        token: str | None = None,
        content_type: str = "application/json",
    ) -> Reply:
        """One request as the admin (or ``token``); any status is returned, never raised."""
        if self._ctx is None:
            self._ctx = ssl.create_default_context(cafile=self.ca_file)
        url = self.url + path + ("?" + urlencode(query) if query else "")
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._ctx, timeout=30) as resp:
                raw, status, headers = resp.read(), resp.status, dict(resp.headers)
        except urllib.error.HTTPError as err:
            raw, status, headers = err.read(), err.code, dict(err.headers)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Reply(status, parsed, headers)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def minor(self) -> int:
        """This server's minor version from its ``/version`` (24 for v1.24, 35 for v1.35).

        The tier is reviewed on both: a test whose answer differs between
        them asks this and expects that version's answer.
        """
        return server_minor(self.ok("GET", "/version"))

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """:meth:`request`, asserting a 2xx; the body."""
        reply = self.request(method, path, body, **kw)
        if not 200 <= reply.status < 300:
            raise AssertionError(f"{method} {path}: {reply.status} {reply.body}")
        return reply.body

    # --- cluster state ----------------------------------------------------------

    def new_namespace(self, prefix: str = "t") -> str:
        """A fresh namespace (nothing deletes namespaces here: no namespace controller)."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.ok(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        return name

    def create_nodes(self, nodes: Iterable[Mapping[str, Any]], workers: int = 8) -> None:
        """Create Nodes as the fake's ``make_node`` shapes them: object, then its status subresource."""

        def one(node: Mapping[str, Any]) -> None:
            meta = {k: v for k, v in node["metadata"].items() if k in ("name", "labels", "annotations")}
            self.ok("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": meta})
            status = {"status": node.get("status") or {}}
            name = quote(meta["name"], safe="")
            self.ok("PATCH", f"/api/v1/nodes/{name}/status", status, content_type=MERGE)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, nodes))

    def versions(self, ns: str) -> dict[str, str]:
        """``resource/name`` -> resourceVersion of every Service, Endpoints and EndpointSlice in ``ns``."""
        out = {}
        for path in (
            f"/api/v1/namespaces/{ns}/services",
            f"/api/v1/namespaces/{ns}/endpoints",
            f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
        ):
            for item in self.ok("GET", path)["items"]:
                out[f"{path.rsplit('/', 1)[1]}/{item['metadata']['name']}"] = item["metadata"][
                    "resourceVersion"
                ]
        return out

    def delete_all_nodes(self) -> None:
        self.ok("DELETE", "/api/v1/nodes")

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.ok("GET", "/api/v1/nodes")["items"])


def _die_with_parent() -> None:
    """In the child: be killed when the test process dies, even by SIGKILL (no atexit runs then)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)
