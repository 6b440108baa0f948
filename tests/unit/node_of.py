"""Raw Node dicts through the run's own node decoding, for the pure-module tests.

A run never sees a Node dict: each page is decoded straight into
``lib.nodes.NodeItem`` (``lib/kube/decoding.py``) and each item made its
``Node``. Tests that start from dicts go the same way: JSON bytes, a
one-item page, the same decoder, ``node_of``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lib import kube
from lib.nodes import Node, NodeItem, node_of


def node_raw(raw: Mapping[str, Any] | Any, address_type: str = "internal") -> Node:
    """The Node a run makes of this list item; MalformedBody or MalformedNode where it refuses it."""
    body = json.dumps({"kind": "NodeList", "metadata": {}, "items": [raw]}).encode()
    page = kube.decode_page(body, NodeItem, 500, "node")
    return node_of(page.items[0], address_type)
