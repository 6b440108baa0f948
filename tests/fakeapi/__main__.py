"""``python -m tests.fakeapi``: the fake API server in a process of its own (``make run``, the demo)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from tests.fakeapi.server import FakeApiServer, load_state


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT: ``--port 0 --state F --kubeconfig OUT --ready-file F``."""
    parser = argparse.ArgumentParser(description="A fake Kubernetes API server for tests and demos.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--state", help='JSON file {"nodes": [...], "objects": [...]}')
    parser.add_argument("--kubeconfig", help="write a kubeconfig pointing at this server here")
    parser.add_argument("--context", default="fake")
    parser.add_argument("--ready-file", help="write the server URL here once listening")
    parser.add_argument("--page-cap", type=int, default=None, help="never return more nodes per page")
    parser.add_argument("--token", default="fake-token")
    parser.add_argument("--log-requests", action="store_true", help="print each request to stderr")
    args = parser.parse_args(argv)

    server = FakeApiServer(page_cap=args.page_cap, token=args.token, host=args.host, port=args.port)
    if args.state:
        load_state(server, args.state)
    if args.log_requests:
        server.on_request = lambda r: print(
            f"{r.method} {r.path} {r.status}{' (injected)' if r.injected else ''}",
            file=sys.stderr,
            flush=True,
        )
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    try:
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig, context=args.context)
        if args.ready_file:
            partial = f"{args.ready_file}.tmp"
            with open(partial, "w", encoding="utf-8") as out:
                out.write(server.url + "\n")
            os.replace(partial, args.ready_file)
        print(f"fake API server listening on {server.url}", file=sys.stderr, flush=True)
        while not done.wait(0.2):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
