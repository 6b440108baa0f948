"""Fault injection: which requests fail, and how the failure is answered."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tests.fakeapi.core import Reply, dumps, reason_for, status_body


@dataclass
class Fault:
    """One injected fault (see :meth:`FakeApiServer.inject`)."""

    method: str
    path: re.Pattern[str]
    status: int | None
    retry_after: str | None
    hang: float | None
    drop: bool
    body: bytes | None
    truncate: bool
    times: int
    query: dict[str, str | bool]
    after: int
    seen: int = 0
    fired: int = 0

    def matches(self, method: str, path: str, query: Mapping[str, str]) -> bool:
        """Whether a request is one this fault aims at."""
        if self.method not in ("*", method) or not self.path.fullmatch(path):
            return False
        for key, want in self.query.items():
            if want is True:
                if key not in query:
                    return False
            elif want is False:
                if key in query:
                    return False
            elif query.get(key) != want:
                return False
        return True


def take_fault(faults: list[Fault], method: str, path: str, query: Mapping[str, str]) -> Fault | None:
    """The fault that fires on this request, counting it as fired (call under the server's lock)."""
    for fault in faults:
        if not fault.matches(method, path, query):
            continue
        if fault.seen < fault.after:
            fault.seen += 1
            continue
        if 0 <= fault.times <= fault.fired:
            continue
        fault.fired += 1
        return fault
    return None


def fault_reply(fault: Fault, method: str, respond: Callable[[], Reply]) -> Reply:
    """The reply a fault gives (``respond`` serves the request for real: only a GET may)."""
    if fault.body is not None:
        content_type = "text/html" if fault.body.lstrip().startswith(b"<") else "application/json"
        reply = Reply(fault.status or 200, fault.body, content_type)
    elif fault.status is not None:
        code = fault.status
        if code >= 400:
            message = f"injected fault: {code} {reason_for(code)}"
            reply = Reply(code, dumps(status_body(code, message)))
        else:
            reply = Reply(
                code, dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
            )
    elif method == "GET":
        reply = respond()  # safe: a GET changes no state
    else:
        reply = Reply(200, dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
    if fault.retry_after is not None:
        reply.headers.append(("Retry-After", fault.retry_after))
    return reply
