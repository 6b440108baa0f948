"""A hostile API server: answers that a broken or malicious server could send.

Used by tests/fake/test_hostile.py and tests/fake/test_signals.py, and by the memory
measurements in the README ("Hostile world"). Every answer goes to the real
client over real HTTP on 127.0.0.1:

* ``gzip_bomb``: a node list whose gzip body (about 1 MB) expands to ``size`` bytes;
* ``huge``: a node list of ``size`` bytes, streamed (no Content-Length);
* ``repeat_continue``: every node page names the same continue token;
* ``dense``: a node list just under the response cap whose items are all ``{}``
  (``json.loads`` made 1.7 GB of it);
* ``dense_valid``: the same with the smallest items the node decoder accepts
  (``{"metadata":{"name":"<hex>"},"status":{}}``, every name distinct);
* ``dense_slices``: one good node, then a slice list like ``dense`` (``{}`` items);
* ``hang``: accept the connection and never answer (a signal must still end the run).

Run as a process for measurements: ``python -m tests.fake.hostile MODE [SIZE] --kubeconfig F``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

MODES = ("gzip_bomb", "huge", "repeat_continue", "hang", "dense", "dense_valid", "dense_slices")
TOKEN = "hostile-token"


def _node(i: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"node-{i}", "uid": f"uid-{i}", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"}],
            # Bulk: a real node carries images and managedFields; 100 KB a page here.
            "images": [{"names": ["x" * 200]}] * 5,
        },
    }


def _gzip_of_zeros(size: int) -> bytes:
    """gzip of a JSON document ``{"items": [], "pad": "000..."}`` of ``size`` bytes, made in 1 MB steps."""
    head, tail = b'{"kind": "NodeList", "items": [], "pad": "', b'"}'
    out = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [out.compress(head)]
    block = b"0" * (1 << 20)
    left = size - len(head) - len(tail)
    while left > 0:
        parts.append(out.compress(block[: min(left, len(block))]))
        left -= len(block)
    parts.append(out.compress(tail))
    parts.append(out.flush())
    return b"".join(parts)


def _dense(size: int, valid: bool) -> Iterator[bytes]:
    """A node list of at most ``size`` bytes packed with the smallest items (see MODES), in ~1 MB parts.

    Generated while it is sent: a subprocess started from this process
    inherits its peak RSS (Linux counts it in the child's ``ru_maxrss``),
    so the test process must never hold such a body whole.
    """
    head, tail = b'{"kind":"NodeList","metadata":{},"items":[', b"]}"
    # Fixed-width names: every valid item is 45 bytes with its comma.
    item = b"{}," if not valid else b'{"metadata":{"name":"%08x"},"status":{}},'
    width = len(item) if not valid else len(item % 0)
    count = (size - len(head) - len(tail) + 1) // width
    yield head
    per_part = (1 << 20) // width
    for start in range(0, count, per_part):
        stop = min(count, start + per_part)
        part = item * (stop - start) if not valid else b"".join(item % i for i in range(start, stop))
        yield part[:-1] if stop == count else part
    yield tail


class HostileServer:
    """One hostile behaviour for ``GET /api/v1/nodes``; everything else 404."""

    def __init__(self, mode: str, size: int = 1 << 30) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
        self.mode, self.size = mode, size
        self.requests = 0
        self.arrived = threading.Event()  # set when a request reaches the server
        self._bomb = _gzip_of_zeros(size) if mode == "gzip_bomb" else b""
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._http: ThreadingHTTPServer | None = None
        self._listener: socket.socket | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HostileServer:
        if self.mode == "hang":
            self._listener = socket.create_server(("127.0.0.1", 0))
            self.port = self._listener.getsockname()[1]
            threading.Thread(target=self._hold, daemon=True).start()
            return self
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.requests += 1
                server.arrived.set()
                if server.mode == "dense_slices" and "/endpointslices" in self.path:
                    self._chunked(_dense(server.size, False))
                    return
                if not self.path.startswith("/api/v1/nodes"):
                    self._send(404, b'{"kind":"Status","code":404}')
                    return
                if server.mode == "dense_slices":
                    self._send(200, json.dumps({"metadata": {}, "items": [_node(1)]}).encode())
                    return
                if server.mode == "gzip_bomb":
                    self._send(200, server._bomb, encoding="gzip")
                elif server.mode in ("dense", "dense_valid"):
                    self._chunked(_dense(server.size, server.mode == "dense_valid"))
                elif server.mode == "huge":
                    self._stream(server.size)
                else:  # repeat_continue: a full page, and always the same token
                    page = {
                        "kind": "NodeList",
                        "apiVersion": "v1",
                        "metadata": {"continue": "same-token", "resourceVersion": "1"},
                        "items": [_node(server.requests * 500 + i) for i in range(500)],
                    }
                    self._send(200, json.dumps(page).encode())

            def _send(self, status: int, body: bytes, encoding: str = "") -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if encoding:
                    self.send_header("Content-Encoding", encoding)
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def _chunked(self, parts: Iterator[bytes]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for part in parts:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass

            def _stream(self, size: int) -> None:
                # Chunked, no length: the client learns the size only by reading.
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                block = b"0" * (1 << 20)
                try:
                    head = b'{"kind":"NodeList","items":[],"pad":"'
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(head), head))
                    sent = 0
                    while sent < size and not server._stop.is_set():
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                        sent += len(block)
                    self.wfile.write(b'2\r\n"}\r\n0\r\n\r\n')
                except OSError:
                    pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def _hold(self) -> None:
        assert self._listener is not None
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests += 1
            self.arrived.set()
            self._held.append(conn)  # never read, never answered

    def stop(self) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._listener is not None:
            self._listener.close()
        for conn in self._held:
            conn.close()

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(
        self, path: str | os.PathLike[str], *, server: str | None = None, **user: Any
    ) -> str:
        """A kubeconfig for this server (``user`` fields replace the token if given)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "h", "cluster": {"server": server or self.url}}],
            "users": [{"name": "h", "user": user or {"token": TOKEN}}],
            "contexts": [{"name": "h", "context": {"cluster": "h", "user": "h"}}],
            "current-context": "h",
        }
        Path(path).write_text(json.dumps(config), encoding="utf-8")
        return os.fspath(path)


def main(argv: list[str] | None = None) -> int:
    """Serve one mode until SIGTERM; write a kubeconfig for it."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("mode", choices=MODES)
    p.add_argument("size", nargs="?", type=int, default=1 << 30)
    p.add_argument("--kubeconfig", required=True)
    args = p.parse_args(argv)
    done = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with HostileServer(args.mode, args.size) as server:
        server.write_kubeconfig(args.kubeconfig)
        print(server.url, file=sys.stderr, flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
