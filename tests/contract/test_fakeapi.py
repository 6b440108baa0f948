"""Tests of the fake API server itself, over real HTTP (not the reconciler)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.fakeapi import APPLY_CONTENT_TYPE, FakeApiError, FakeApiServer, make_node, parse_selector
from tests.fakeapi.versions import server_minor

REPO = str(Path(__file__).resolve().parents[2])
NS = "kube-system"
NODES = "/api/v1/nodes"
SVC = f"/api/v1/namespaces/{NS}/services/kubelet"
EP = f"/api/v1/namespaces/{NS}/endpoints/kubelet"
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"


@dataclass
class Resp:
    status: int
    headers: Message
    data: bytes

    @property
    def doc(self) -> Any:
        return json.loads(self.data)


def call(
    fake: FakeApiServer,
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    body: Any = None,
    *,
    content_type: str = APPLY_CONTENT_TYPE,
    token: str | None = "fake-token",
) -> Resp:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = content_type
    try:
        conn.request(method, path + ("?" + urlencode(query) if query else ""), body=data, headers=headers)
        resp = conn.getresponse()
        return Resp(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def apply(
    fake: FakeApiServer,
    path: str,
    body: Any,
    *,
    manager: str = "test",
    force: bool = True,
    dry_run: bool = False,
) -> Resp:
    query = {"fieldManager": manager, "force": "true" if force else "false"}
    if dry_run:
        query["dryRun"] = "All"
    return call(fake, "PATCH", path, query, body)


def service(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubelet", "namespace": NS, "labels": {"k8s-app": "kubelet"}},
        "spec": {"clusterIP": "None", "ports": [{"name": "https-metrics", "port": 10250, "protocol": "TCP"}]}
        | spec,
    }


def endpoints(ips: list[str], **meta: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubelet", "namespace": NS, "labels": {"k8s-app": "kubelet"}} | meta,
    }
    if ips:
        body["subsets"] = [
            {
                "addresses": [{"ip": ip} for ip in ips],
                "ports": [{"name": "https-metrics", "port": 10250, "protocol": "TCP"}],
            }
        ]
    return body


def eslice(name: str, ips: list[str], family: str = "IPv4", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": "kubelet", "k8s-app": "kubelet"},
        },
        "addressType": family,
        "ports": [{"name": "https-metrics", "port": 10250, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
    } | extra


def ips(n: int) -> list[str]:
    return [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(n)]


def rv(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["resourceVersion"])


def names(page: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in page["items"]]


# --- make_node ---------------------------------------------------------------------


def test_make_node_shapes() -> None:
    node = make_node("a", "10.0.0.1")
    assert node["status"]["addresses"] == [
        {"type": "InternalIP", "address": "10.0.0.1"},
        {"type": "Hostname", "address": "a"},
    ]
    conditions = node["status"]["conditions"]
    assert conditions[-1]["type"] == "Ready" and conditions[-1]["status"] == "True"
    assert {c["type"] for c in conditions[:-1]} >= {"MemoryPressure"}
    assert node["metadata"]["uid"] == make_node("a")["metadata"]["uid"] != make_node("b")["metadata"]["uid"]
    assert "deletionTimestamp" not in node["metadata"]

    pairs = [("ExternalIP", "1.2.3.4"), ("InternalIP", "fd00::1")]
    other = make_node("b", pairs, ready=None, deleting=True, uid="u-1", labels={"role": "x"}, created="2025")
    assert [(a["type"], a["address"]) for a in other["status"]["addresses"]] == pairs
    assert all(c["type"] != "Ready" for c in other["status"]["conditions"])
    assert other["metadata"]["deletionTimestamp"]
    assert other["metadata"]["uid"] == "u-1"
    assert other["metadata"]["labels"]["role"] == "x"
    assert other["metadata"]["creationTimestamp"] == "2025"
    assert "addresses" not in make_node("c")["status"]
    assert make_node("d", "10.0.0.2", ready="Unknown")["status"]["conditions"][-1]["status"] == "Unknown"


def test_make_node_bulk_is_about_the_size_asked() -> None:
    node = make_node("big", "10.0.0.1", bulk=20_000)
    size = len(json.dumps(node))
    assert 20_000 <= size <= 21_000
    assert node["status"]["images"] and node["metadata"]["managedFields"] and node["metadata"]["annotations"]


# --- node lists --------------------------------------------------------------------


def test_list_nodes_without_limit_returns_all(fake: FakeApiServer) -> None:
    fake.set_nodes(make_node(f"n{i}", f"10.0.0.{i + 1}") for i in range(5))
    page = call(fake, "GET", NODES).doc
    assert page["kind"] == "NodeList" and page["apiVersion"] == "v1"
    assert names(page) == [f"n{i}" for i in range(5)]
    assert "continue" not in page["metadata"] and page["metadata"]["resourceVersion"]
    one = call(fake, "GET", f"{NODES}/n3")
    assert (
        one.status == 200 and one.doc["metadata"]["name"] == "n3" and one.doc["metadata"]["resourceVersion"]
    )
    missing = call(fake, "GET", f"{NODES}/nope")
    assert missing.status == 404 and missing.doc["reason"] == "NotFound"


def test_page_cap_pages_every_list(fake: FakeApiServer) -> None:
    fake.page_cap = 3
    fake.set_nodes(make_node(f"n{i:02}", f"10.0.0.{i + 1}") for i in range(10))
    seen: list[str] = []
    token = ""
    pages = []
    while True:
        query = {"limit": "500"} | ({"continue": token} if token else {})
        page = call(fake, "GET", NODES, query).doc
        pages.append(page)
        seen += names(page)
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert [len(p["items"]) for p in pages] == [3, 3, 3, 1]
    assert [p["metadata"].get("remainingItemCount") for p in pages] == [7, 4, 1, None]
    assert seen == [f"n{i:02}" for i in range(10)]
    assert call(fake, "GET", NODES, {"limit": "2"}).doc["metadata"]["remainingItemCount"] == 8


def test_list_is_a_consistent_snapshot(fake: FakeApiServer) -> None:
    fake.set_nodes(make_node(f"n{i}", f"10.0.0.{i + 1}") for i in range(6))
    first = call(fake, "GET", NODES, {"limit": "2"}).doc
    fake.delete_node("n4")
    fake.put_node(make_node("n5", "10.9.9.9"))
    fake.put_node(make_node("n9", "10.0.0.99"))
    token = first["metadata"]["continue"]
    rest: list[dict[str, Any]] = []
    while token:
        page = call(fake, "GET", NODES, {"limit": "2", "continue": token}).doc
        assert page["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        rest += page["items"]
        token = page["metadata"].get("continue", "")
    assert [n["metadata"]["name"] for n in rest] == ["n2", "n3", "n4", "n5"]
    assert rest[-1]["status"]["addresses"][0]["address"] == "10.0.0.6"
    fresh = call(fake, "GET", NODES).doc
    assert names(fresh) == ["n0", "n1", "n2", "n3", "n5", "n9"]
    assert int(fresh["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])


def test_expired_and_garbage_continue_tokens(fake: FakeApiServer) -> None:
    fake.set_nodes(make_node(f"n{i}", f"10.0.0.{i + 1}") for i in range(4))
    token = call(fake, "GET", NODES, {"limit": "1"}).doc["metadata"]["continue"]
    assert call(fake, "GET", NODES, {"limit": "1", "continue": token}).status == 200
    fake.expire_continue_tokens()
    expired = call(fake, "GET", NODES, {"limit": "1", "continue": token})
    assert expired.status == 410 and expired.doc["reason"] == "Expired" and expired.doc["code"] == 410
    assert call(fake, "GET", NODES, {"limit": "1"}).status == 200  # a new list works

    fake.continue_ttl = 0.0
    old = call(fake, "GET", NODES, {"limit": "1"}).doc["metadata"]["continue"]
    time.sleep(0.01)
    assert call(fake, "GET", NODES, {"continue": old}).status == 410

    garbage = call(fake, "GET", NODES, {"limit": "1", "continue": "not-a-token!!"})
    assert garbage.status == 400 and garbage.doc["reason"] == "BadRequest"


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", ["a", "b", "c", "d"]),
        ("role=web", ["a", "b"]),
        ("role==web", ["a", "b"]),
        ("role!=web", ["c", "d"]),
        ("role", ["a", "b", "c"]),
        ("!role", ["d"]),
        ("role in (web,db)", ["a", "b", "c"]),
        ("role notin (web)", ["c", "d"]),
        ("role=web,zone=z1", ["a"]),
        ("role=web, zone notin (z1)", ["b"]),
        ("example.com/tier in (gold)", ["c"]),
        ("rank>1", ["b", "c"]),
        ("rank<2", ["a"]),
        ("empty=", ["d"]),
    ],
)
def test_label_selectors(fake: FakeApiServer, selector: str, expected: list[str]) -> None:
    fake.set_nodes(
        [
            make_node("a", "10.0.0.1", labels={"role": "web", "zone": "z1", "rank": "1"}),
            make_node("b", "10.0.0.2", labels={"role": "web", "zone": "z2", "rank": "2"}),
            make_node("c", "10.0.0.3", labels={"role": "db", "example.com/tier": "gold", "rank": "3"}),
            make_node("d", "10.0.0.4", labels={"empty": ""}),
        ]
    )
    assert names(call(fake, "GET", NODES, {"labelSelector": selector}).doc) == expected
    fake.page_cap = 1  # paging with a selector gives the same answer
    got: list[str] = []
    token = ""
    while True:
        page = call(
            fake, "GET", NODES, {"labelSelector": selector} | ({"continue": token} if token else {})
        ).doc
        got += names(page)
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert got == expected


@pytest.mark.parametrize(
    "selector",
    [
        "role=",
        "=web",
        "role in ()",
        "role in (a",
        "role in a",
        "role=a=b",
        "a,",
        "Bad Key=x",
        "k=v v",
        "!",
        "k>x",
    ],
)
def test_malformed_selector_is_400(fake: FakeApiServer, selector: str) -> None:
    if selector == "role=":
        assert parse_selector(selector)[0].values == ("",)  # valid: the empty value
        return
    resp = call(fake, "GET", NODES, {"labelSelector": selector})
    assert resp.status == 400
    assert resp.doc["reason"] == "BadRequest" and "unable to parse requirement" in resp.doc["message"]


# --- server-side apply -------------------------------------------------------------


def test_apply_creates_then_noop_then_change(fake: FakeApiServer) -> None:
    created = apply(fake, EP, endpoints(["10.0.0.1"]))
    assert created.status == 201
    obj = created.doc
    assert (
        obj["metadata"]["uid"] and obj["metadata"]["creationTimestamp"] and obj["metadata"]["namespace"] == NS
    )
    (entry,) = obj["metadata"]["managedFields"]
    assert entry["manager"] == "test" and entry["operation"] == "Apply" and entry["fieldsType"] == "FieldsV1"
    assert entry["fieldsV1"] == {"f:metadata": {"f:labels": {"f:k8s-app": {}}}, "f:subsets": {}}
    assert obj["subsets"][0]["addresses"] == [{"ip": "10.0.0.1"}]

    again = apply(fake, EP, endpoints(["10.0.0.1"]))
    assert again.status == 200 and again.doc == obj  # same rv, same time stamps

    changed = apply(fake, EP, endpoints(["10.0.0.1", "10.0.0.2"]))
    assert changed.status == 200 and int(rv(changed.doc)) > int(rv(obj))
    assert fake.get_object("Endpoints", NS, "kubelet") == changed.doc
    assert call(fake, "GET", EP).doc == changed.doc


def test_apply_prunes_fields_the_applier_dropped(fake: FakeApiServer) -> None:
    first = endpoints(["10.0.0.1"])
    first["metadata"]["labels"]["extra"] = "yes"
    first["metadata"]["annotations"] = {"endpoints.kubernetes.io/over-capacity": "truncated"}
    apply(fake, EP, first)
    apply(fake, EP, endpoints([]))
    obj = fake.get_object("Endpoints", NS, "kubelet")
    assert obj is not None
    assert obj["metadata"]["labels"] == {"k8s-app": "kubelet"}
    assert "annotations" not in obj["metadata"] and "subsets" not in obj
    assert obj["metadata"]["managedFields"][0]["fieldsV1"] == {"f:metadata": {"f:labels": {"f:k8s-app": {}}}}


def test_conflict_without_force_and_transfer_with_force(fake: FakeApiServer) -> None:
    fake.apply_as("other", eslice("kubelet-ipv4-0", ["10.0.0.1"]))
    before = fake.get_object("EndpointSlice", NS, "kubelet-ipv4-0")
    denied = apply(fake, f"{SLICES}/kubelet-ipv4-0", eslice("kubelet-ipv4-0", ["10.0.0.2"]), force=False)
    assert denied.status == 409 and denied.doc["reason"] == "Conflict"
    causes = denied.doc["details"]["causes"]
    assert {
        "reason": "FieldManagerConflict",
        "message": 'conflict with "other"',
        "field": ".endpoints",
    } in causes
    assert '"other"' in denied.doc["message"]
    assert fake.get_object("EndpointSlice", NS, "kubelet-ipv4-0") == before

    forced = apply(fake, f"{SLICES}/kubelet-ipv4-0", eslice("kubelet-ipv4-0", ["10.0.0.2"]))
    assert forced.status == 200
    owners = {e["manager"]: e["fieldsV1"] for e in forced.doc["metadata"]["managedFields"]}
    assert "f:endpoints" in owners["test"] and "f:endpoints" not in owners["other"]
    assert "f:ports" in owners["other"] and "f:ports" in owners["test"]  # same value: shared
    assert forced.doc["endpoints"][0]["addresses"] == ["10.0.0.2"]


def test_shared_field_stays_when_one_owner_drops_it(fake: FakeApiServer) -> None:
    fake.apply_as("other", endpoints(["10.0.0.1"]))
    assert apply(fake, EP, endpoints(["10.0.0.1"]), force=False).status == 200  # same value: no conflict
    apply(fake, EP, endpoints([]))
    obj = fake.get_object("Endpoints", NS, "kubelet")
    assert obj is not None and obj["subsets"][0]["addresses"] == [{"ip": "10.0.0.1"}]


def test_put_object_managed_fields_are_honoured(fake: FakeApiServer) -> None:
    seeded = fake.put_object(
        endpoints(["10.0.0.1"])
        | {
            "metadata": {
                "name": "kubelet",
                "namespace": NS,
                "managedFields": [
                    {
                        "manager": "prometheus-operator",
                        "operation": "Update",
                        "apiVersion": "v1",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:subsets": {}},
                    }
                ],
            }
        }
    )
    assert seeded["metadata"]["uid"] and seeded["metadata"]["resourceVersion"]
    denied = apply(fake, EP, endpoints(["10.0.0.2"]), force=False)
    assert denied.status == 409 and "prometheus-operator" in denied.doc["message"]
    assert apply(fake, EP, endpoints(["10.0.0.2"])).status == 200


def test_resource_version_precondition(fake: FakeApiServer) -> None:
    # A resourceVersion guards an existing object only: to a missing one, the apply creates it.
    missing = apply(fake, EP, endpoints(["10.0.0.1"], resourceVersion="5"))
    assert missing.status == 201
    current = rv(missing.doc)
    stale = apply(fake, EP, endpoints(["10.0.0.2"], resourceVersion="1"))
    assert stale.status == 409 and stale.doc["reason"] == "Conflict"
    assert "the object has been modified" in stale.doc["message"]
    assert apply(fake, EP, endpoints(["10.0.0.2"], resourceVersion=current)).status == 200


def test_dry_run_stores_nothing(fake: FakeApiServer) -> None:
    created = apply(fake, EP, endpoints(["10.0.0.1"]), dry_run=True)
    assert created.status == 201 and created.doc["metadata"]["uid"]
    assert "resourceVersion" not in created.doc["metadata"]
    assert fake.get_object("Endpoints", NS, "kubelet") is None
    stored = apply(fake, EP, endpoints(["10.0.0.1"])).doc
    counter = fake.resource_version
    dry = apply(fake, EP, endpoints(["10.0.0.2"]), dry_run=True)
    assert dry.status == 200 and dry.doc["subsets"][0]["addresses"] == [{"ip": "10.0.0.2"}]
    assert rv(dry.doc) == rv(stored) and fake.resource_version == counter
    assert fake.get_object("Endpoints", NS, "kubelet") == stored
    invalid = apply(fake, EP, endpoints(["127.0.0.1"]), dry_run=True)
    assert invalid.status == 422  # full validation in dry run too


def test_json_patch_test_and_remove_only_dry_run_and_errors(fake: FakeApiServer) -> None:
    stored = apply(fake, EP, endpoints(["10.0.0.1"], labels={"a": "1", "b/c": "2"})).doc
    version = stored["metadata"]["resourceVersion"]

    def patch(ops: Any, **query: str) -> Resp:
        return call(fake, "PATCH", EP, query or None, ops, content_type="application/json-patch+json")

    guard = {"op": "test", "path": "/metadata/resourceVersion", "value": version}
    dry = patch([guard, {"op": "remove", "path": "/metadata/labels/b~1c"}], dryRun="All")
    assert dry.status == 200 and dry.doc["metadata"]["labels"] == {"a": "1"}
    assert fake.get_object("Endpoints", NS, "kubelet") == stored  # nothing persisted
    assert patch([guard, {"op": "remove", "path": "/metadata/labels/nope"}]).status == 422
    assert patch([guard, {"op": "remove", "path": "/subsets/3"}]).status == 422
    assert patch([guard, {"op": "add", "path": "/metadata/labels/x", "value": "y"}]).status == 415
    assert patch({"op": "remove"}).status == 400 and patch(b"{not json").status == 400
    assert patch([guard, {"op": "remove", "path": "no-slash"}]).status == 400
    assert call(fake, "PATCH", f"{SLICES}/missing", None, [guard],
                content_type="application/json-patch+json").status == 404  # fmt: skip
    assert fake.get_object("Endpoints", NS, "kubelet") == stored
    done = patch([guard, {"op": "remove", "path": "/metadata/labels/b~1c"}])
    assert done.status == 200 and rv(done.doc) > rv(stored)
    assert fake.get_object("Endpoints", NS, "kubelet") == done.doc


def test_apply_request_errors(fake: FakeApiServer) -> None:
    body = endpoints(["10.0.0.1"])
    no_manager = call(fake, "PATCH", EP, {"force": "true"}, body)
    assert no_manager.status == 422 and "fieldManager" in no_manager.doc["message"]
    assert no_manager.doc["reason"] == "Invalid"
    merge = call(fake, "PATCH", EP, {"fieldManager": "m"}, body, content_type="application/merge-patch+json")
    assert merge.status == 415 and merge.doc["reason"] == "UnsupportedMediaType"
    assert call(fake, "PATCH", EP, {"fieldManager": "m"}, b"{not json: [").status == 400
    assert apply(fake, EP, body | {"kind": "Service"}).status == 400
    assert apply(fake, EP, body | {"apiVersion": "v2"}).status == 400
    assert apply(fake, f"{SLICES}/x", eslice("y", ["10.0.0.1"])).status == 400
    assert apply(fake, EP, endpoints(["10.0.0.1"], namespace="default")).status == 400
    assert apply(fake, EP, endpoints(["10.0.0.1"], managedFields=[{"manager": "x"}])).status == 400
    assert apply(fake, EP, [1, 2]).status == 400
    assert fake.objects("Endpoints") == []
    yaml_body = b"apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: kubelet\n"
    assert call(fake, "PATCH", EP, {"fieldManager": "m"}, yaml_body).status == 201


def test_service_defaults_are_owned_by_nobody(fake: FakeApiServer) -> None:
    created = apply(fake, SVC, service(ports=[{"name": "https-metrics", "port": 10250}])).doc
    spec = created["spec"]
    assert spec["type"] == "ClusterIP" and spec["sessionAffinity"] == "None" and spec["clusterIP"] == "None"
    assert spec["ports"] == [{"name": "https-metrics", "port": 10250, "protocol": "TCP", "targetPort": 10250}]
    # Headless without a selector: both families, as kube-apiserver defaults it.
    assert spec["ipFamilies"] == ["IPv4", "IPv6"] and spec["ipFamilyPolicy"] == "RequireDualStack"
    owned = created["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]
    assert set(owned) == {"f:clusterIP", "f:ports"}
    # spec.ports is a map list keyed by port and protocol: each item's fields are owned.
    assert owned["f:ports"] == {'k:{"port":10250,"protocol":"TCP"}': {".": {}, "f:name": {}, "f:port": {}}}
    again = apply(fake, SVC, service(ports=[{"name": "https-metrics", "port": 10250}]))
    assert rv(again.doc) == rv(created)  # defaults do not make a re-apply a change
    changed = apply(fake, SVC, service(clusterIP="10.96.0.99"))
    assert changed.status == 422 and "may not change once set" in changed.doc["message"]
    web = service() | {"metadata": {"name": "web"}}
    del web["spec"]["clusterIP"]
    allocated = apply(fake, "/api/v1/namespaces/default/services/web", web)
    assert allocated.doc["spec"]["clusterIP"].startswith("10.96.")


@pytest.mark.parametrize(("version", "restamps"), [("1.24", True), ("1.35", False)])
def test_an_empty_map_in_an_apply_body_restamps_every_time_on_1_24_only(version: str, restamps: bool) -> None:
    with FakeApiServer(version=version) as fake:
        body = endpoints(["10.0.0.1"], annotations={})
        first = rv(apply(fake, EP, body).doc)
        assert (rv(apply(fake, EP, body).doc) != first) is restamps
        clean = rv(apply(fake, EP, endpoints(["10.0.0.1"])).doc)
        assert rv(apply(fake, EP, endpoints(["10.0.0.1"])).doc) == clean


# --- validation ----------------------------------------------------------------------


def _slice_with(**extra: Any) -> dict[str, Any]:
    return eslice("s", ["10.0.0.1"]) | extra


def _slice_meta(**meta: Any) -> dict[str, Any]:
    body = eslice("s", ["10.0.0.1"])
    body["metadata"].update(meta)
    return body


def _endpoints_with(subsets: list[dict[str, Any]]) -> dict[str, Any]:
    return endpoints([]) | {"subsets": subsets}


INVALID: list[tuple[str, str, dict[str, Any], str]] = [
    ("slice-too-many", "s", eslice("s", ips(1001)), "Too many: 1001"),
    ("slice-family", "s", _slice_with(addressType="IPv5"), "Unsupported value"),
    ("slice-no-family", "s", {k: v for k, v in _slice_with().items() if k != "addressType"}, "addressType"),
    ("slice-v6-in-v4", "s", eslice("s", ["fd00::1"]), "must be a valid IPv4 address"),
    ("slice-v4-in-v6", "s", eslice("s", ["10.0.0.1"], "IPv6"), "must be a valid IPv6 address"),
    ("slice-not-ip", "s", eslice("s", ["node-1"]), "must be a valid IP address"),
    ("slice-loopback", "s", eslice("s", ["127.0.0.1"]), "loopback"),
    ("slice-loopback6", "s", eslice("s", ["::1"], "IPv6"), "loopback"),
    ("slice-link-local", "s", eslice("s", ["169.254.0.5"]), "link-local"),
    ("slice-link-local6", "s", eslice("s", ["fe80::1"], "IPv6"), "link-local"),
    ("slice-unspecified", "s", eslice("s", ["0.0.0.0"]), "unspecified"),
    ("slice-multicast", "s", eslice("s", ["224.0.0.1"]), "multicast"),
    ("slice-multicast6", "s", eslice("s", ["ff02::1"], "IPv6"), "multicast"),
    ("slice-unnamed-ports", "s", _slice_with(ports=[{"port": 1}, {"port": 2}]), 'Duplicate value: ""'),
    (
        "slice-dup-port",
        "s",
        _slice_with(ports=[{"name": "a", "port": 1}, {"name": "a", "port": 2}]),
        "Duplicate",
    ),
    ("slice-no-address", "s", _slice_with(endpoints=[{"addresses": []}]), "at least 1 address"),
    ("slice-name", "Bad_Name", eslice("Bad_Name", ["10.0.0.1"]), "RFC 1123 subdomain"),
    (
        "slice-owner-uid",
        "s",
        _slice_meta(ownerReferences=[{"apiVersion": "v1", "kind": "Service", "name": "k"}]),
        "uid",
    ),
    ("slice-label", "s", _slice_meta(labels={"app.kubernetes.io/managed-by": "x" * 64}), "63 characters"),
    ("ep-empty-subset", "kubelet", _endpoints_with([{"ports": [{"port": 1}]}]), "must specify `addresses`"),
    ("ep-loopback", "kubelet", endpoints(["127.0.0.1"]), "loopback"),
    ("ep-link-local", "kubelet", endpoints(["169.254.169.254"]), "link-local"),
    ("ep-unspecified", "kubelet", endpoints(["::"]), "unspecified"),
    ("ep-multicast", "kubelet", endpoints(["224.0.0.251"]), "link-local multicast"),
    ("ep-not-ip", "kubelet", endpoints(["10.0.0.300"]), "must be a valid IP address"),
    (
        "ep-port",
        "kubelet",
        _endpoints_with([{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 0}]}]),
        "65535",
    ),
    ("svc-name", "1kubelet", service() | {"metadata": {"name": "1kubelet"}}, "DNS-1035"),
    ("svc-port", "kubelet", service(ports=[{"name": "a", "port": 70000}]), "between 1 and 65535"),
    ("svc-port-names", "kubelet", service(ports=[{"port": 1}, {"port": 2}]), "name: Required value"),
]


@pytest.mark.parametrize(("case", "name", "body", "needle"), INVALID, ids=[c[0] for c in INVALID])
def test_validation_rejects_with_422(
    fake: FakeApiServer, case: str, name: str, body: dict[str, Any], needle: str
) -> None:
    kind = body["kind"]
    base = {"Service": f"/api/v1/namespaces/{NS}/services", "Endpoints": f"/api/v1/namespaces/{NS}/endpoints"}
    path = f"{base.get(kind, SLICES)}/{name}"
    resp = apply(fake, path, body)
    assert resp.status == 422, resp.doc
    assert resp.doc["reason"] == "Invalid" and resp.doc["kind"] == "Status"
    assert needle in resp.doc["message"] and f'"{name}" is invalid' in resp.doc["message"]
    assert fake.objects(kind) == []


def test_validation_limits_are_inclusive(fake: FakeApiServer) -> None:
    assert apply(fake, f"{SLICES}/s", eslice("s", ips(1000))).status == 201
    assert apply(fake, f"{SLICES}/s6", eslice("s6", ["fd00::1", "2001:db8::5"], "IPv6")).status == 201
    many_ports = [{"name": f"p{i}", "port": i + 1} for i in range(100)]
    assert apply(fake, f"{SLICES}/p", eslice("p", ["10.0.0.1"], ports=many_ports)).status == 201
    assert apply(fake, EP, endpoints(ips(1000))).status == 201


# --- collections and delete ----------------------------------------------------------


def test_list_collection_by_selector(fake: FakeApiServer) -> None:
    fake.apply_as("r", eslice("kubelet-ipv4-0", ["10.0.0.1"]))
    fake.apply_as("r", eslice("kubelet-ipv6-0", ["fd00::1"], "IPv6"))
    other = eslice("foreign", ["10.0.0.9"])
    other["metadata"]["labels"] = {"kubernetes.io/service-name": "other"}
    fake.apply_as("x", other)
    fake.apply_as(
        "r",
        eslice("kubelet-ipv4-0", ["10.0.0.1"])
        | {"metadata": {"name": "kubelet-ipv4-0", "namespace": "default"}},
    )
    page = call(fake, "GET", SLICES, {"labelSelector": "kubernetes.io/service-name=kubelet"}).doc
    assert page["kind"] == "EndpointSliceList" and page["apiVersion"] == "discovery.k8s.io/v1"
    assert names(page) == ["kubelet-ipv4-0", "kubelet-ipv6-0"]
    assert all(  # as on a real server: list items carry neither
        "kind" not in i and "apiVersion" not in i for i in page["items"]
    )
    assert all(i["metadata"]["managedFields"] for i in page["items"])
    assert len(call(fake, "GET", SLICES).doc["items"]) == 3
    everywhere = [(o["metadata"]["name"], o["metadata"]["namespace"]) for o in fake.objects("EndpointSlice")]
    assert everywhere == [
        ("foreign", NS),
        ("kubelet-ipv4-0", "default"),
        ("kubelet-ipv4-0", NS),
        ("kubelet-ipv6-0", NS),
    ]
    assert len(fake.objects("EndpointSlice", NS)) == 3
    assert call(fake, "GET", SLICES, {"labelSelector": "a in ("}).status == 400


def test_delete(fake: FakeApiServer) -> None:
    path = f"{SLICES}/kubelet-ipv4-0"
    stored = fake.apply_as("r", eslice("kubelet-ipv4-0", ["10.0.0.1"]))
    dry = call(fake, "DELETE", path, {"dryRun": "All"})
    assert dry.status == 200 and fake.get_object("EndpointSlice", NS, "kubelet-ipv4-0") is not None
    stale = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": "1"}}
    conflict = call(fake, "DELETE", path, body=stale, content_type="application/json")
    assert conflict.status == 409 and conflict.doc["reason"] == "Conflict"
    assert fake.get_object("EndpointSlice", NS, "kubelet-ipv4-0") is not None
    fresh = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": rv(stored)}}
    done = call(fake, "DELETE", path, body=fresh, content_type="application/json")
    assert done.status == 200 and done.doc["kind"] == "Status" and done.doc["status"] == "Success"
    assert fake.get_object("EndpointSlice", NS, "kubelet-ipv4-0") is None
    gone = call(fake, "DELETE", path)
    assert gone.status == 404 and gone.doc["reason"] == "NotFound"
    assert call(fake, "GET", path).status == 404


def test_unknown_paths_and_methods(fake: FakeApiServer) -> None:
    assert call(fake, "GET", "/api/v1/pods").status == 404
    assert call(fake, "GET", f"/api/v1/namespaces/{NS}/pods/x").status == 404
    assert call(fake, "POST", f"/api/v1/namespaces/{NS}/services", body={}).status == 405
    assert call(fake, "PUT", EP, body={}).status == 405
    assert call(fake, "DELETE", NODES).status == 405
    assert [r.status for r in fake.unhandled] == [404, 404, 405, 405, 405]
    assert fake.errors == []


# --- auth ----------------------------------------------------------------------------


def test_requests_need_the_token(fake: FakeApiServer) -> None:
    for token in (None, "wrong"):
        resp = call(fake, "GET", NODES, token=token)
        assert resp.status == 401 and resp.doc["reason"] == "Unauthorized"
    assert apply(fake, EP, endpoints(["10.0.0.1"])).status == 201
    assert [r.status for r in fake.requests] == [401, 401, 201]


def test_forbid(fake: FakeApiServer) -> None:
    fake.forbid("PATCH", r"/apis/discovery\.k8s\.io/.*")
    denied = apply(fake, f"{SLICES}/s", eslice("s", ["10.0.0.1"]))
    assert denied.status == 403 and denied.doc["reason"] == "Forbidden"
    assert denied.doc["code"] == 403 and denied.doc["status"] == "Failure"
    assert apply(fake, f"{SLICES}/s", eslice("s", ["10.0.0.1"])).status == 403  # permanent
    assert call(fake, "GET", SLICES).status == 200
    assert apply(fake, EP, endpoints(["10.0.0.1"])).status == 201
    assert fake.objects("EndpointSlice") == []


# --- faults --------------------------------------------------------------------------


def test_fault_status_with_retry_after(fake: FakeApiServer) -> None:
    fake.set_nodes([make_node("a", "10.0.0.1")])
    fake.inject("GET", NODES, status=503, retry_after="2")
    resp = call(fake, "GET", NODES)
    assert resp.status == 503 and resp.headers["Retry-After"] == "2"
    assert (
        resp.doc["kind"] == "Status"
        and resp.doc["reason"] == "ServiceUnavailable"
        and resp.doc["code"] == 503
    )
    assert resp.headers["Content-Type"] == "application/json"
    assert call(fake, "GET", NODES).status == 200  # times=1
    fake.inject("PATCH", ".*", status=429)
    limited = apply(fake, EP, endpoints(["10.0.0.1"]))
    assert limited.status == 429 and limited.doc["reason"] == "TooManyRequests"
    assert fake.get_object("Endpoints", NS, "kubelet") is None  # never changes state
    assert [(r.status, r.injected) for r in fake.requests] == [(503, True), (200, False), (429, True)]


@pytest.mark.parametrize(
    ("code", "reason"), [(409, "Conflict"), (410, "Expired"), (422, "Invalid"), (500, "InternalError")]
)
def test_fault_status_reasons(fake: FakeApiServer, code: int, reason: str) -> None:
    fake.inject("*", ".*", status=code)
    resp = apply(fake, EP, endpoints(["10.0.0.1"]))
    assert resp.status == code and resp.doc["reason"] == reason
    assert fake.objects("Endpoints") == []


def test_fault_hang(fake: FakeApiServer) -> None:
    fake.inject("PATCH", ".*", hang=0.3)
    started = time.monotonic()
    assert apply(fake, EP, endpoints(["10.0.0.1"])).status == 201  # a hang alone answers normally
    assert time.monotonic() - started >= 0.3
    assert fake.requests[-1].injected
    fake.inject("PATCH", ".*", hang=0.3, status=500)
    started = time.monotonic()
    assert apply(fake, EP, endpoints(["10.0.0.2"])).status == 500
    assert time.monotonic() - started >= 0.3
    obj = fake.get_object("Endpoints", NS, "kubelet")
    assert obj is not None and obj["subsets"][0]["addresses"] == [{"ip": "10.0.0.1"}]


def test_fault_hang_is_a_client_timeout(fake: FakeApiServer) -> None:
    fake.inject("GET", NODES, hang=0.3)
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=0.1)
    conn.request("GET", NODES, headers={"Authorization": "Bearer fake-token"})
    with pytest.raises(TimeoutError):
        conn.getresponse()
    conn.close()


def test_fault_drop(fake: FakeApiServer) -> None:
    fake.inject("PATCH", ".*", drop=True)
    with pytest.raises(http.client.RemoteDisconnected):
        apply(fake, EP, endpoints(["10.0.0.1"]))
    assert fake.objects("Endpoints") == []
    assert (fake.requests[-1].status, fake.requests[-1].injected) == (0, True)
    fake.inject("GET", ".*", drop=True, hang=0.3)
    started = time.monotonic()
    with pytest.raises(http.client.RemoteDisconnected):
        call(fake, "GET", NODES)
    assert time.monotonic() - started >= 0.3
    assert apply(fake, EP, endpoints(["10.0.0.1"])).status == 201


def test_fault_raw_bodies(fake: FakeApiServer) -> None:
    fake.inject("GET", NODES, body=b"<html>bad gateway</html>", status=502)
    resp = call(fake, "GET", NODES)
    assert resp.status == 502 and resp.data == b"<html>bad gateway</html>"
    assert resp.headers["Content-Type"] == "text/html"
    fake.inject("GET", NODES, body=b'{"items": [')
    cut = call(fake, "GET", NODES)
    assert cut.status == 200 and cut.data == b'{"items": ['
    fake.inject("PATCH", ".*", body=b"<html>")
    assert apply(fake, EP, endpoints(["10.0.0.1"])).data == b"<html>"
    assert fake.objects("Endpoints") == []


def test_fault_truncate(fake: FakeApiServer) -> None:
    fake.set_nodes(make_node(f"n{i}", f"10.0.0.{i + 1}") for i in range(5))
    fake.inject("GET", NODES, truncate=True)
    with pytest.raises(http.client.IncompleteRead):
        call(fake, "GET", NODES)
    fake.inject("PATCH", ".*", truncate=True)
    with pytest.raises(http.client.IncompleteRead):
        apply(fake, EP, endpoints(["10.0.0.1"]))
    assert fake.objects("Endpoints") == []
    assert [r.status for r in fake.requests] == [200, 200]
    assert len(call(fake, "GET", NODES).doc["items"]) == 5


def test_fault_after_times_and_forever(fake: FakeApiServer) -> None:
    fake.inject("GET", NODES, status=500, after=2, times=2)
    assert [call(fake, "GET", NODES).status for _ in range(6)] == [200, 200, 500, 500, 200, 200]
    fake.inject("GET", NODES, status=503, times=-1)
    assert [call(fake, "GET", NODES).status for _ in range(3)] == [503, 503, 503]
    fake.clear_faults()
    assert call(fake, "GET", NODES).status == 200


def test_fault_query_and_method_match(fake: FakeApiServer) -> None:
    fake.set_nodes(make_node(f"n{i}", f"10.0.0.{i + 1}") for i in range(3))
    fake.inject("GET", NODES, status=500, query={"continue": True}, times=-1)
    fake.inject("PATCH", NODES, status=500, times=-1)
    first = call(fake, "GET", NODES, {"limit": "1"})
    assert first.status == 200
    token = first.doc["metadata"]["continue"]
    assert call(fake, "GET", NODES, {"limit": "1", "continue": token}).status == 500
    fake.inject("GET", SLICES, status=500, query={"labelSelector": "a=b"})
    assert call(fake, "GET", SLICES, {"labelSelector": "a=c"}).status == 200
    assert call(fake, "GET", SLICES, {"labelSelector": "a=b"}).status == 500
    fake.inject("GET", SLICES, status=500, query={"limit": False})
    assert call(fake, "GET", SLICES, {"limit": "5"}).status == 200
    assert call(fake, "GET", SLICES).status == 500
    with pytest.raises(ValueError):
        fake.inject("GET", NODES)


# --- the request log, keep-alive, the Python API --------------------------------------


def test_request_log(fake: FakeApiServer) -> None:
    body = endpoints(["10.0.0.1"])
    apply(fake, EP, body)
    call(fake, "GET", f"{NODES}?a=1&a=2")
    call(fake, "GET", EP + "/status")
    first, second, third = fake.requests
    assert (first.method, first.path, first.status, first.injected) == ("PATCH", EP, 201, False)
    assert first.query == {"fieldManager": "test", "force": "true"}
    assert first.content_type == APPLY_CONTENT_TYPE and first.json() == body
    assert first.headers["authorization"] == "Bearer fake-token"
    assert second.query == {"a": "2"} and second.body == b"" and second.content_type is None
    assert third.status == 404
    assert fake.matching("GET") == [second, third] and fake.matching("*", r".*/endpoints/.*") == [
        first,
        third,
    ]
    fake.clear_log()
    assert fake.requests == [] and fake.unhandled == []


def test_keep_alive_and_content_length(fake: FakeApiServer) -> None:
    fake.set_nodes([make_node("a", "10.0.0.1")])
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    headers = {"Authorization": "Bearer fake-token"}
    conn.request("GET", NODES, headers=headers)
    first = conn.getresponse()
    data = first.read()
    assert int(first.headers["Content-Length"]) == len(data)
    sock = conn.sock
    conn.request("GET", f"{NODES}/a", headers=headers)
    assert conn.getresponse().read() and conn.sock is sock
    conn.close()


def test_python_api(fake: FakeApiServer, tmp_path: Path) -> None:
    result = fake.apply_as("other", eslice("s", ["10.0.0.1"]))
    assert result["metadata"]["managedFields"][0]["manager"] == "other"
    with pytest.raises(FakeApiError) as conflict:
        fake.apply_as("me", eslice("s", ["10.0.0.2"]), force=False)
    assert conflict.value.code == 409
    with pytest.raises(FakeApiError) as invalid:
        fake.apply_as("me", eslice("s", ["127.0.0.1"]))
    assert invalid.value.code == 422
    stored = fake.put_object(
        {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "x", "namespace": NS}}
    )
    assert stored["metadata"]["uid"] and "spec" not in stored  # as-is: no defaults
    assert [o["metadata"]["name"] for o in fake.objects("Service")] == ["x"]
    assert fake.get_object("Service", NS, "missing") is None
    fake.put_node(make_node("n", "10.0.0.1"))
    node = fake.get_object("Node", "", "n")
    assert node is not None and node["metadata"]["resourceVersion"]
    fake.delete_node("n")
    assert fake.node_names() == []
    path = fake.write_kubeconfig(tmp_path / "kc", context="ctx", token="t", server="https://example:6443")
    config = json.loads(Path(path).read_text())
    assert config["current-context"] == "ctx" and config["users"][0]["user"]["token"] == "t"
    assert config["clusters"][0]["cluster"]["server"] == "https://example:6443"


def test_kubeconfig_fixture_works_with_the_official_client(fake: FakeApiServer, kubeconfig: str) -> None:
    from kubernetes import client, config

    fake.page_cap = 2
    fake.set_nodes(make_node(f"n{i}", f"10.0.0.{i + 1}") for i in range(3))
    api_client: Any = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    core = client.CoreV1Api(api_client)
    first: Any = core.list_node(limit=500)
    assert [n.metadata.name for n in first.items] == ["n0", "n1"] and first.metadata._continue
    applied: Any = core.patch_namespaced_service(
        "kubelet",
        NS,
        service(),
        field_manager="client",
        force=True,
        _content_type=APPLY_CONTENT_TYPE,
    )
    assert applied.spec.cluster_ip == "None"
    assert fake.matching("PATCH")[0].content_type == APPLY_CONTENT_TYPE
    api_client.close()


def test_stop_ends_hangs_and_connections() -> None:
    fake = FakeApiServer().start()
    fake.inject("GET", NODES, hang=30)
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    conn.request("GET", NODES, headers={"Authorization": "Bearer fake-token"})
    time.sleep(0.05)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2
    conn.close()


# --- as a separate process -------------------------------------------------------------


def test_runs_as_a_process(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(
        json.dumps(
            {
                "nodes": [make_node("a", "10.0.0.1"), make_node("b", "10.0.0.2", ready="False")],
                "objects": [endpoints(["10.0.0.1"])],
            }
        )
    )
    kubeconfig, ready = tmp_path / "kubeconfig", tmp_path / "ready"
    args = [sys.executable, "-m", "tests.fakeapi", "--port", "0", "--state", str(state)]
    args += ["--kubeconfig", str(kubeconfig), "--ready-file", str(ready), "--page-cap", "1"]
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        # From elsewhere, with only the repository on the path: the package runs on its own.
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": REPO},
    )
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the fake API server did not get ready"
            time.sleep(0.05)
        url = ready.read_text().strip()
        config = json.loads(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == url
        token = config["users"][0]["user"]["token"]
        request = urllib.request.Request(
            f"{url}{NODES}?limit=5", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            page = json.loads(resp.read())
        assert names(page) == ["a"] and page["metadata"]["continue"]
        request = urllib.request.Request(f"{url}{EP}", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert json.loads(resp.read())["subsets"][0]["addresses"] == [{"ip": "10.0.0.1"}]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        if proc.stderr:
            proc.stderr.close()


def test_keep_alive_answers_do_not_wait_for_a_delayed_ack(fake: FakeApiServer) -> None:
    # The benchmark's write phase is only meaningful if an
    # answer on a kept-alive connection leaves at once. Headers and body are
    # two writes; with Nagle's algorithm on, the body waits for the client's
    # delayed ACK of the headers (~40 ms on Linux), as Go's net/http never does.
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    headers = {"Authorization": "Bearer fake-token", "Content-Type": APPLY_CONTENT_TYPE}
    took = []
    try:
        for i in range(15):
            body = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "kubelet", "namespace": NS, "labels": {"round": str(i)}},
                "spec": {"clusterIP": "None", "ports": [{"name": "x", "port": 10250, "protocol": "TCP"}]},
            }
            started = time.perf_counter()
            conn.request("PATCH", f"{SVC}?fieldManager=m&force=true", json.dumps(body).encode(), headers)
            resp = conn.getresponse()
            resp.read()
            took.append(time.perf_counter() - started)
            assert resp.status in (200, 201)
    finally:
        conn.close()
    took.sort()
    assert took[len(took) // 2] < 0.02, took


# --- versions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "minor"),
    [
        ({"major": "1", "minor": "35", "gitVersion": "v1.35.0", "emulationMinor": "35"}, 35),
        ({"major": "1", "minor": "34+", "gitVersion": "v1.34.2-gke.1"}, 34),
        ({"major": "", "minor": "", "gitVersion": "v1.24.2"}, 24),
        ({"major": "", "minor": "", "gitVersion": "v0.0.0-master+$Format:%H$"}, 24),
        ({"major": "0", "minor": "0", "gitVersion": "v0.0.0-master+abc"}, 24),
        ({}, 24),
    ],
    ids=["released", "distribution", "numbers-in-git-version", "unstamped", "zeros", "empty"],
)
def test_server_minor_reads_every_version_body(body: dict[str, Any], minor: int) -> None:
    assert server_minor(body) == minor


@pytest.mark.parametrize(("version", "minor"), [("1.35", 35), ("1.24", 24)])
def test_version_answers_as_the_version_imitated(version: str, minor: int) -> None:
    with FakeApiServer(version=version) as fake:
        body = call(fake, "GET", "/version").doc
    assert server_minor(body) == minor
    # Current servers add the emulation and compatibility versions; v1.24 has none.
    assert ("emulationMinor" in body) is (minor > 24)


def test_the_fake_refuses_a_version_it_cannot_imitate() -> None:
    with pytest.raises(ValueError, match=r"not '1\.30'"):
        FakeApiServer(version="1.30")
