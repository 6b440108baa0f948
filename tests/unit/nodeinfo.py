"""Raw Node dicts through the run's own node decoding, for the pure-module tests.

A run never sees a Node dict: each page is decoded straight into
``lib.nodes.NodeItem`` (``lib/kube/decoding.py``) and slimmed. Tests that start from
dicts go the same way: JSON bytes, a one-item page, the same decoder, ``slim``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lib import kube
from lib.nodes import NodeInfo, NodeItem, slim


def slim_raw(raw: Mapping[str, Any] | Any) -> NodeInfo:
    """The NodeInfo a run makes of this list item; MalformedBody or MalformedNode where it refuses it."""
    body = json.dumps({"kind": "NodeList", "metadata": {}, "items": [raw]}).encode()
    page = kube.decode_page(body, NodeItem, 500, "node")
    return slim(page.items[0])
