"""lib.kube's list reading: page size, memory bounded by one page, items apart from their page.

Through the real ``kubernetes`` client over real HTTP against the fake API server.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from lib import kube, log
from lib.kube import Api, Deadline, load_client
from lib.run import node_items
from tests.fakeapi import FakeApiServer, make_node

NODES = "/api/v1/nodes"


def api_for(kubeconfig: str, timeout: float = 30) -> Api:
    return Api(load_client(kubeconfig, None, {}), Deadline(timeout), log.get())


def big_nodes(count: int) -> Iterator[dict[str, Any]]:
    # 50 KB of JSON each (managedFields, a long image list): a page dwarfs
    # the few hundred bytes a node leaves behind, so the ratios below are sharp.
    for i in range(count):
        yield make_node(f"n{i:04d}", f"10.1.{i // 250}.{i % 250 + 1}", bulk=50000)


def test_pages_are_requested_with_the_page_size(fake: FakeApiServer, kubeconfig: str) -> None:
    count = kube.api.PAGE_SIZE + 1
    fake.set_nodes(make_node(f"n{i:04d}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(count))
    nodes, pages = api_for(kubeconfig).list_nodes("", node_items("internal"))
    assert len(nodes) == count and pages == 2
    assert [r.query.get("limit") for r in fake.matching("GET", NODES)] == [str(kube.api.PAGE_SIZE)] * 2


def test_the_page_size_is_read_when_the_list_starts(
    fake: FakeApiServer, kubeconfig: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.set_nodes(make_node(f"n{i}", f"10.0.0.{i + 1}") for i in range(5))
    monkeypatch.setattr(kube.api, "PAGE_SIZE", 2)
    _, pages = api_for(kubeconfig).list_nodes("", node_items("internal"))
    assert pages == 3
    assert {r.query.get("limit") for r in fake.matching("GET", NODES)} == {"2"}


def _peak_of_list(fake: FakeApiServer, kubeconfig: str, count: int, page_size: int) -> int:
    fake.set_nodes(big_nodes(count))
    api = api_for(kubeconfig)
    api.list_nodes("", node_items("internal"), page_size)  # warm up: imports, connection, caches
    gc.collect()
    tracemalloc.start()
    try:
        nodes, _ = api.list_nodes("", node_items("internal"), page_size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(nodes) == count
    return peak


def test_peak_memory_does_not_grow_with_the_node_count(fake: FakeApiServer, kubeconfig: str) -> None:
    # 5 pages of 10 nodes, then 40: the peak is one page either way (its
    # bytes, its text, the parsed page; how the bytes arrive moves it by up
    # to a fifth); only the Nodes made of them (a few hundred bytes a node) add
    # up. Keeping every page would make it ~8x.
    few = _peak_of_list(fake, kubeconfig, 50, 10)
    many = _peak_of_list(fake, kubeconfig, 400, 10)
    assert many < 1.5 * few, (few, many)


def test_each_page_is_dropped_before_the_next_is_fetched(fake: FakeApiServer, kubeconfig: str) -> None:
    # What this process holds at the moment the server answers each page
    # request: the nodes listed so far, never a page more.
    fake.set_nodes(big_nodes(80))
    api = api_for(kubeconfig)
    api.list_nodes("", node_items("internal"), 10)  # warm up
    held: list[int] = []
    fake.on_request = lambda r: held.append(tracemalloc.get_traced_memory()[0]) if r.path == NODES else None
    gc.collect()
    tracemalloc.start()
    try:
        api.list_nodes("", node_items("internal"), 10)
    finally:
        tracemalloc.stop()
        fake.on_request = None
    assert len(held) == 8
    # A page is ~560 KB of JSON; the nodes listed add ~8 KB a page.
    assert max(held) - held[0] < 8 * 20_000, held


# --- list items held apart from their page -------------------------------------------------


def _slice_page(endpoints: int) -> bytearray:
    eps = [
        {"addresses": [f"10.0.{i // 250}.{i % 250 + 1}"], "conditions": {"ready": True}, "nodeName": f"n{i}"}
        for i in range(endpoints)
    ]
    item = {"metadata": {"name": "s1", "labels": {"a": "b"}}, "addressType": "IPv4", "endpoints": eps}
    return bytearray(json.dumps({"kind": "EndpointSliceList", "metadata": {}, "items": [item]}).encode())


@pytest.mark.parametrize("endpoints", [1, 2000])
def test_a_list_item_reads_the_same_and_holds_nothing_of_its_page(endpoints: int) -> None:
    page = _slice_page(endpoints)
    expected = json.loads(page)["items"][0]
    (item,) = kube.decode_page(page, dict[str, msgspec.Raw], 500, "endpointslice").items
    obj = kube.JsonObject.detached(item)
    del item
    page[:] = b" " * len(page)  # what a member still pointing into the page would now read
    assert dict(obj) == expected and len(obj) == len(expected) and "endpoints" in obj
    assert obj["endpoints"] == expected["endpoints"]  # read twice: decoded each time
