"""lib.kube's node-list reading: page size, memory bounded by one page, the GC pause.

Through the real ``kubernetes`` client over real HTTP against the fake API server.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from lib import kube, log
from lib.exitcodes import ApiUnavailable
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
    count = kube.PAGE_SIZE + 1
    fake.set_nodes(make_node(f"n{i:04d}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(count))
    nodes, pages = api_for(kubeconfig).list_nodes("", node_items("internal"))
    assert len(nodes) == count and pages == 2
    assert [r.query.get("limit") for r in fake.matching("GET", NODES)] == [str(kube.PAGE_SIZE)] * 2


def test_the_page_size_is_read_when_the_list_starts(
    fake: FakeApiServer, kubeconfig: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.set_nodes(make_node(f"n{i}", f"10.0.0.{i + 1}") for i in range(5))
    monkeypatch.setattr(kube, "PAGE_SIZE", 2)
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
    # to a fifth); only the slim NodeInfos (a few hundred bytes a node) add
    # up. Keeping every page would make it ~8x.
    few = _peak_of_list(fake, kubeconfig, 50, 10)
    many = _peak_of_list(fake, kubeconfig, 400, 10)
    assert many < 1.5 * few, (few, many)


def test_each_page_is_dropped_before_the_next_is_fetched(fake: FakeApiServer, kubeconfig: str) -> None:
    # What this process holds at the moment the server answers each page
    # request: from page 2 on, the one page buffer every page is read into
    # (PageBuffer) and the nodes listed so far, never one parsed page more.
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
    assert held[1] - held[0] < 1_000_000, held  # the buffer (one page), kept for the next page
    # A parsed page is ~4x its ~560 KB of JSON; the nodes listed add ~8 KB a page.
    assert max(held) - held[1] < 7 * 20_000, held


def test_the_gc_runs_again_after_the_list(fake: FakeApiServer, kubeconfig: str) -> None:
    fake.page_cap = 2
    fake.set_nodes(make_node(f"n{i}", f"10.0.0.{i + 1}") for i in range(5))
    assert gc.isenabled()
    nodes, pages = api_for(kubeconfig).list_nodes("", node_items("internal"))
    assert (len(nodes), pages) == (5, 3)
    assert gc.isenabled()


def test_the_gc_runs_again_after_a_failed_page(fake: FakeApiServer, kubeconfig: str) -> None:
    fake.page_cap = 2
    fake.set_nodes(make_node(f"n{i}", f"10.0.0.{i + 1}") for i in range(5))
    # An item no real server sends (no status) fails the list at once, mid-page.
    page = b'{"kind": "NodeList", "metadata": {}, "items": [{"metadata": {"name": "x"}}]}'
    fake.inject("GET", NODES, body=page, query={"continue": True})
    with pytest.raises(ApiUnavailable, match="malformed node list"):
        api_for(kubeconfig).list_nodes("", node_items("internal"))
    assert gc.isenabled()


def test_a_gc_the_caller_paused_stays_paused(fake: FakeApiServer, kubeconfig: str) -> None:
    fake.set_nodes([make_node("n0", "10.0.0.1")])
    gc.disable()
    try:
        api_for(kubeconfig).list_nodes("", node_items("internal"))
        assert not gc.isenabled()
    finally:
        gc.enable()


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
    assert obj["endpoints"] == expected["endpoints"]  # read twice: decompressed each time


def test_the_slice_list_is_held_compressed() -> None:
    # 2000 endpoints are ~170 KB of JSON; held, the object takes a fraction of that.
    page = bytes(_slice_page(2000))  # alive throughout: only what the object holds counts
    tracemalloc.start()
    try:
        (item,) = kube.decode_page(page, dict[str, msgspec.Raw], 500, "endpointslice").items
        before = tracemalloc.get_traced_memory()[0]
        obj = kube.JsonObject.detached(item)
        del item
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(obj["endpoints"]) == 2000
    assert held < len(page) / 4, f"{held} bytes held for a {len(page)}-byte item"


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PAGES = """
import sys
from lib import kube
def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
chunk = b"x" * 65536
start = rss_kib()
buffer = kube.PageBuffer() if sys.argv[1] == "one buffer" else None
kept = []
for i in range(4):  # node pages of ~10 MB, read 64 KB at a time as _read_bounded does
    body = kube._Body(buffer.take() if buffer else bytearray())
    while body.size < (10 << 20) + i * 100000:
        body.add(chunk)
    view = memoryview(body.buf)[: body.size]
    kept.append([bytes(100) for _ in range(2000)])  # what each page's decoding keeps
    del body, view
del buffer
print(rss_kib() - start)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator, Linux's mremap")
@pytest.mark.parametrize("how", ["one buffer", "a buffer a page"])
def test_a_list_gives_its_page_memory_back(how: str) -> None:
    # Four 10 MB pages, then what the run builds next: with a bytearray a
    # page, glibc keeps the freed pages resident (the control shows it); in
    # one mapping a list, the memory leaves with the list.
    out = subprocess.run(
        [sys.executable, "-c", _PAGES, how], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    left_kib = int(out)
    if how == "one buffer":
        assert left_kib < 3 << 10, f"{left_kib} KiB left after the list"
    else:
        assert left_kib > 9 << 10, f"{left_kib} KiB left after the list"


@pytest.mark.skipif(sys.platform != "linux", reason="elsewhere a page buffer is a new bytearray a page")
def test_a_page_buffer_is_never_overwritten_under_a_reader() -> None:
    pages = kube.PageBuffer()
    first = pages.take()
    first[:8] = b"page one"
    assert pages.take() is first  # nothing reads it: reused
    reader = memoryview(first)[:4]  # a decoded page still held
    second = pages.take()
    assert second is not first and bytes(reader) == b"page"
