"""One scenario, two servers: the fake API server checked against a real kube-apiserver.

Every test runs twice, on the fake (``tests/fakeapi/``) and on the real
server of the session (``tests/realserver.py``, skipped with one line where
its binaries are missing), through one small raw-HTTP client. The expected
values are what the real server answers, reviewed on kube-apiserver v1.24 and
v1.35; where the fake answered otherwise, the fake was fixed. Where the two
versions differ (``../shared/k8s/README.md``), a test asks the server its
``/version`` (:attr:`Api.minor`) and expects that version's answer, and the
fake runs twice: as current Kubernetes and as v1.24 (``FakeApiServer(version=)``).
Compared: what the reconciler reads or acts on (status codes, Status bodies,
managedFields, resourceVersion changes, list shapes), not timestamps or uids.
"""

from __future__ import annotations

import copy
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.fakeapi import FakeApiServer, make_node
from tests.fakeapi.versions import ENDPOINTS_DEPRECATED_MINOR, ENDPOINTS_WARNING, OLD_MINOR, server_minor
from tests.realserver import APPLY, Reply

SERVICES, ENDPOINTS = "/api/v1/namespaces/{ns}/services", "/api/v1/namespaces/{ns}/endpoints"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
COLLECTIONS = {"Service": SERVICES, "Endpoints": ENDPOINTS, "EndpointSlice": SLICES}
PORTS = [
    {"name": "https-metrics", "port": 10250, "protocol": "TCP"},
    {"name": "cadvisor", "port": 4194, "protocol": "TCP"},
]


@dataclass
class Api:
    """Raw HTTP to one server: base URL, the admin's token, a rights-less token, TLS context."""

    name: str
    base: str
    token: str
    nobody_token: str
    ctx: ssl.SSLContext | None
    ns: str
    put_nodes: Callable[[list[dict[str, Any]]], None]

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        token: str | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Reply:
        url = self.base + path.format(ns=self.ns) + ("?" + urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.token}")
        req.add_header("Accept", accept)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
                raw, status, headers = resp.read(), resp.status, dict(resp.headers)
        except urllib.error.HTTPError as err:
            raw, status, headers = err.read(), err.code, dict(err.headers)
        return Reply(status, json.loads(raw) if raw else None, headers)

    def path(self, kind: str, name: str | None = None) -> str:
        return COLLECTIONS[kind] + (f"/{name}" if name else "")

    def apply(
        self, body: dict[str, Any], manager: str = "m1", *, force: bool = False, dry_run: bool = False
    ) -> Reply:
        query = {"fieldManager": manager}
        if force:
            query["force"] = "true"
        if dry_run:
            query["dryRun"] = "All"
        path = self.path(body["kind"], body["metadata"]["name"])
        return self.request("PATCH", path, body, query=query, content_type=APPLY)

    def get(self, kind: str, name: str | None = None, **query: str) -> Reply:
        return self.request("GET", self.path(kind, name), query=query or None)

    @property
    def minor(self) -> int:
        """The server's minor version, from its ``/version`` (24 for v1.24, 35 for v1.35)."""
        reply = self.request("GET", "/version")
        assert reply.status == 200, reply.body
        return server_minor(reply.body)


@pytest.fixture(params=["fake", "fake-1.24", pytest.param("real", marks=pytest.mark.real)])
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    if request.param.startswith("fake"):
        version = request.param.partition("-")[2] or "1.35"
        with FakeApiServer(version=version) as fake:
            yield Api("fake", fake.url, fake.token, fake.nobody_token, None, "contract", fake.set_nodes)
        assert not fake.errors, fake.errors[0]
        return
    real = request.getfixturevalue("real")  # skips with one line where the binaries are missing
    ctx = ssl.create_default_context(cafile=real.ca_file)
    yield Api(
        "real", real.url, real.admin_token, real.nobody_token, ctx, real.new_namespace("c"), real.create_nodes
    )


# --- bodies -----------------------------------------------------------------------------


def endpoints(name: str = "kubelet", ips: list[str] | None = None, **meta: Any) -> dict[str, Any]:
    addresses = [{"ip": ip, "nodeName": f"n{i}"} for i, ip in enumerate(ips or ["10.0.0.1"])]
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "labels": {"app": "kubelet"}, **meta},
        "subsets": [{"addresses": addresses, "ports": copy.deepcopy(PORTS)}],
    }


def eslice(name: str = "kubelet-a", ips: list[str] | None = None, **top: Any) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "kubelet"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips or ["10.0.0.1"]],
        "ports": copy.deepcopy(PORTS),
        **top,
    }


def service(name: str = "kubelet", ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"app": "kubelet"}},
        "spec": {"clusterIP": "None", "ports": copy.deepcopy(PORTS if ports is None else ports), **spec},
    }


def rv(reply: Reply) -> int:
    return int(reply.body["metadata"]["resourceVersion"])


def managers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """managedFields by manager, without the time stamp."""
    return {
        m["manager"]: {k: v for k, v in m.items() if k not in ("manager", "time")}
        for m in obj["metadata"].get("managedFields") or []
    }


def ports_of(obj: dict[str, Any]) -> list[tuple[str, int]]:
    return [(p.get("name", ""), p["port"]) for p in obj["spec"]["ports"]]


def key(port: int) -> str:
    return f'k:{{"port":{port},"protocol":"TCP"}}'


def status_of(reply: Reply) -> dict[str, Any]:
    """The parts of a Status body every client reads."""
    body = reply.body
    return {k: body.get(k) for k in ("kind", "apiVersion", "status", "reason", "code")}


def failure(code: int, reason: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}


# --- server-side apply ------------------------------------------------------------------------


def test_apply_creates_then_updates_and_a_same_apply_changes_nothing(api: Api) -> None:
    created = api.apply(endpoints())
    assert created.status == 201
    assert managers(created.body) == {
        "m1": {
            "operation": "Apply",
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:subsets": {}},
        }
    }
    again = api.apply(endpoints())
    assert again.status == 200 and rv(again) == rv(created)
    assert again.body == created.body  # not even managedFields' time moved
    changed = api.apply(endpoints(ips=["10.0.0.2"]))
    assert changed.status == 200 and rv(changed) > rv(created)
    assert api.get("Endpoints", "kubelet").body == changed.body


def test_fields_v1_of_the_objects_the_reconciler_writes(api: Api) -> None:
    svc = api.apply(service())
    assert svc.status == 201
    fields = {"f:name": {}, "f:port": {}, "f:protocol": {}}
    assert managers(svc.body)["m1"]["fieldsV1"] == {
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {
            "f:clusterIP": {},
            "f:ports": {key(10250): {".": {}, **fields}, key(4194): {".": {}, **fields}},
        },
    }
    got = api.apply(eslice())
    assert managers(got.body)["m1"]["fieldsV1"] == {
        "f:metadata": {"f:labels": {"f:kubernetes.io/service-name": {}}},
        "f:addressType": {},
        "f:endpoints": {},
        "f:ports": {},
    }
    assert got.body["metadata"]["generation"] == 1


def test_server_defaults_of_a_headless_service_and_a_slice(api: Api) -> None:
    spec = api.apply(service(ports=[{"name": "a", "port": 1}])).body["spec"]
    assert spec["ports"] == [{"name": "a", "port": 1, "protocol": "TCP", "targetPort": 1}]
    assert spec["clusterIPs"] == ["None"] and spec["type"] == "ClusterIP"
    assert spec["ipFamilies"] == ["IPv4", "IPv6"] and spec["ipFamilyPolicy"] == "RequireDualStack"
    body = eslice(endpoints=[{"addresses": ["10.0.0.1"]}])
    del body["ports"]
    got = api.apply(body).body
    assert got["endpoints"] == [{"addresses": ["10.0.0.1"], "conditions": {}}]
    assert got["ports"] is None  # not omitempty in discovery/v1: served as null


def test_conflict_without_force_then_transfer_with_force(api: Api) -> None:
    first = api.apply(eslice(ips=["10.0.0.1"]))
    denied = api.apply(eslice(ips=["10.0.0.2"]), "m2")
    assert denied.status == 409
    assert status_of(denied) == failure(409, "Conflict")
    assert denied.body["message"] == 'Apply failed with 1 conflict: conflict with "m1": .endpoints'
    assert denied.body["details"] == {
        "causes": [{"reason": "FieldManagerConflict", "message": 'conflict with "m1"', "field": ".endpoints"}]
    }
    assert rv(api.get("EndpointSlice", "kubelet-a")) == rv(first)
    forced = api.apply(eslice(ips=["10.0.0.2"]), "m2", force=True)
    assert forced.status == 200 and forced.body["endpoints"][0]["addresses"] == ["10.0.0.2"]
    owned = managers(forced.body)
    assert "f:endpoints" not in owned["m1"]["fieldsV1"] and "f:addressType" in owned["m1"]["fieldsV1"]
    assert "f:endpoints" in owned["m2"]["fieldsV1"]


def test_service_ports_merge_port_by_port_between_managers(api: Api) -> None:
    api.apply(service())
    theirs = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubelet"}}
    other = api.apply(theirs | {"spec": {"ports": [{"name": "other", "port": 9999}]}}, "m2")
    assert other.status == 200  # another port: no conflict, no force needed
    assert ports_of(other.body) == [("https-metrics", 10250), ("cadvisor", 4194), ("other", 9999)]
    assert managers(other.body)["m2"]["fieldsV1"] == {
        "f:spec": {"f:ports": {key(9999): {".": {}, "f:name": {}, "f:port": {}}}}
    }
    # A forced apply that no longer names a port drops only the ports it owned.
    ours = api.apply(service(ports=PORTS[:1]), force=True)
    assert ports_of(ours.body) == [("https-metrics", 10250), ("other", 9999)]
    assert set(managers(ours.body)["m1"]["fieldsV1"]["f:spec"]["f:ports"]) == {key(10250)}
    # The same port under another name is a conflict on that item's field.
    renamed = [{"name": "x", "port": 10250, "protocol": "TCP"}]
    clash = api.apply(theirs | {"spec": {"ports": renamed}}, "m3")
    assert clash.status == 409
    assert clash.body["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "m1"',
            "field": '.spec.ports[port=10250,protocol="TCP"].name',
        }
    ]


@pytest.mark.parametrize(
    ("body", "field", "changed"),
    [
        (endpoints(), "subsets", [{"addresses": [{"ip": "10.0.0.9"}]}]),
        (eslice(), "endpoints", [{"addresses": ["10.0.0.9"], "conditions": {"ready": True}}]),
        (eslice(), "ports", [{"name": "other", "port": 1, "protocol": "TCP"}]),
    ],
    ids=["endpoints-subsets", "slice-endpoints", "slice-ports"],
)
def test_atomic_lists_are_replaced_whole_by_a_forced_apply(
    api: Api, body: dict[str, Any], field: str, changed: list[Any]
) -> None:
    api.apply(body)
    theirs = {**copy.deepcopy(body), field: changed}
    theirs["metadata"] = {"name": body["metadata"]["name"]}
    if "addressType" in body:
        theirs["addressType"] = "IPv4"
    got = api.apply(theirs, "m2", force=True)
    assert got.status == 200 and got.body[field] == changed
    assert f"f:{field}" not in managers(got.body)["m1"]["fieldsV1"]


# --- lists ------------------------------------------------------------------------------------


def test_list_items_carry_no_api_version_or_kind(api: Api) -> None:
    api.apply(endpoints())
    api.apply(eslice())
    api.put_nodes([make_node("node-a", "10.0.0.1")])
    for path, list_kind, api_version in (
        (ENDPOINTS, "EndpointsList", "v1"),
        (SLICES, "EndpointSliceList", "discovery.k8s.io/v1"),
        ("/api/v1/nodes", "NodeList", "v1"),
    ):
        page = api.request("GET", path).body
        assert (page["kind"], page["apiVersion"]) == (list_kind, api_version)
        assert len(page["items"]) == 1
        assert "kind" not in page["items"][0] and "apiVersion" not in page["items"][0]
    single = api.get("Endpoints", "kubelet").body
    assert (single["kind"], single["apiVersion"]) == ("Endpoints", "v1")
    node = api.request("GET", "/api/v1/nodes/node-a").body
    assert (node["kind"], node["apiVersion"]) == ("Node", "v1")


def test_a_metadata_only_list(api: Api) -> None:
    # What a run reads after its writes to learn whether anyone else wrote a slice.
    for i in range(3):
        assert api.apply(eslice(f"kubelet-{i}", [f"10.0.0.{i + 1}"])).status == 201
    api.apply(
        eslice("other") | {"metadata": {"name": "other", "labels": {"kubernetes.io/service-name": "x"}}}
    )
    full = api.get("EndpointSlice", labelSelector="kubernetes.io/service-name=kubelet").body
    query = {"labelSelector": "kubernetes.io/service-name=kubelet", "limit": "2"}
    first = api.request("GET", SLICES, query=query, accept=METADATA_LIST)
    assert first.status == 200
    page = first.body
    assert (page["kind"], page["apiVersion"]) == ("PartialObjectMetadataList", "meta.k8s.io/v1")
    assert [set(item) for item in page["items"]] == [{"kind", "apiVersion", "metadata"}] * 2
    assert {(i["kind"], i["apiVersion"]) for i in page["items"]} == {
        ("PartialObjectMetadata", "meta.k8s.io/v1")
    }
    rest = api.request(
        "GET", SLICES, query=query | {"continue": page["metadata"]["continue"]}, accept=METADATA_LIST
    )
    items = page["items"] + rest.body["items"]
    assert "continue" not in rest.body["metadata"]
    assert [i["metadata"] for i in items] == [i["metadata"] for i in full["items"]]


def test_an_empty_metadata_only_list_has_null_items(api: Api) -> None:
    # Both v1.24 and v1.35: the metadata-only list of nothing says null, the plain list [].
    query = {"labelSelector": "kubernetes.io/service-name=nothing-here"}
    meta = api.request("GET", SLICES, query=query, accept=METADATA_LIST)
    assert meta.status == 200 and meta.body["kind"] == "PartialObjectMetadataList"
    assert meta.body["items"] is None
    plain = api.request("GET", SLICES, query=query)
    assert plain.status == 200 and plain.body["items"] == []


def test_v1_endpoints_draw_a_deprecation_warning_from_1_33(api: Api) -> None:
    want = [ENDPOINTS_WARNING] if api.minor >= ENDPOINTS_DEPRECATED_MINOR else []
    created = api.apply(endpoints())
    for reply in (created, api.get("Endpoints", "kubelet"), api.get("Endpoints")):
        assert reply.status in (200, 201)
        assert [v for k, v in reply.headers.items() if k.lower() == "warning"] == want
    assert not [k for k in api.apply(eslice()).headers if k.lower() == "warning"]


def _five(api: Api) -> None:
    for i in range(5):
        labels = {"n": str(i), "grp": "a" if i % 2 else "b"}
        body = endpoints(f"p{i}") | {"metadata": {"name": f"p{i}", "labels": labels}}
        assert api.apply(body).status == 201


def test_paging_with_limit_and_continue(api: Api) -> None:
    _five(api)
    first = api.get("Endpoints", limit="2").body
    assert [i["metadata"]["name"] for i in first["items"]] == ["p0", "p1"]
    assert first["metadata"]["remainingItemCount"] == 3 and first["metadata"]["continue"]
    second = api.get("Endpoints", limit="2", **{"continue": first["metadata"]["continue"]}).body
    assert [i["metadata"]["name"] for i in second["items"]] == ["p2", "p3"]
    assert second["metadata"]["remainingItemCount"] == 1
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    last = api.get("Endpoints", limit="2", **{"continue": second["metadata"]["continue"]}).body
    assert [i["metadata"]["name"] for i in last["items"]] == ["p4"]
    assert "continue" not in last["metadata"] and "remainingItemCount" not in last["metadata"]
    bad = api.get("Endpoints", limit="2", **{"continue": "garbage"})
    assert bad.status == 400 and status_of(bad) == failure(400, "BadRequest")


def test_a_filtered_page_may_end_early_with_a_continue_token(api: Api) -> None:
    _five(api)
    first = api.get("Endpoints", limit="2", labelSelector="grp=a").body
    assert [i["metadata"]["name"] for i in first["items"]] == ["p1", "p3"]
    assert first["metadata"]["continue"] and "remainingItemCount" not in first["metadata"]
    rest = api.get(
        "Endpoints", limit="2", labelSelector="grp=a", **{"continue": first["metadata"]["continue"]}
    )
    assert rest.body["items"] == [] and "continue" not in rest.body["metadata"]


SELECTORS = [
    ("grp=a", ["p1", "p3"]),
    ("grp==a", ["p1", "p3"]),
    ("grp!=a", ["p0", "p2", "p4"]),
    ("n in (1,2)", ["p1", "p2"]),
    ("n notin (1,2)", ["p0", "p3", "p4"]),
    ("!grp", []),
    ("grp", ["p0", "p1", "p2", "p3", "p4"]),
    ("n>2", ["p3", "p4"]),
    ("n<2", ["p0", "p1"]),
    ("grp=a,n=3", ["p3"]),
    ("grp=b,!nope", ["p0", "p2", "p4"]),
]


def test_label_selectors(api: Api) -> None:
    _five(api)
    for selector, want in SELECTORS:
        got = api.get("Endpoints", labelSelector=selector)
        assert got.status == 200, (selector, got.body)
        assert [i["metadata"]["name"] for i in got.body["items"]] == want, selector
    bad = api.get("Endpoints", labelSelector="bad key!")
    assert bad.status == 400 and status_of(bad) == failure(400, "BadRequest")
    assert bad.body["message"].startswith("unable to parse requirement")


# --- dry run and preconditions ----------------------------------------------------------------


def test_dry_run_persists_nothing(api: Api) -> None:
    made = api.apply(endpoints(), dry_run=True)
    assert made.status == 201 and "resourceVersion" not in made.body["metadata"]
    assert api.get("Endpoints", "kubelet").status == 404
    stored = api.apply(endpoints())
    dry = api.apply(endpoints(ips=["10.0.0.2"]), dry_run=True)
    assert dry.status == 200 and dry.body["subsets"][0]["addresses"][0]["ip"] == "10.0.0.2"
    assert rv(dry) == rv(stored) and api.get("Endpoints", "kubelet").body == stored.body
    deleted = api.request("DELETE", api.path("Endpoints", "kubelet"), query={"dryRun": "All"})
    assert deleted.status == 200 and deleted.body["status"] == "Success"
    assert api.get("Endpoints", "kubelet").body == stored.body


def test_resource_version_preconditions_on_apply(api: Api) -> None:
    missing = api.apply(endpoints(resourceVersion="12345"))
    assert missing.status == 201  # to a missing object: the apply creates it
    current = str(rv(missing))
    stale = api.apply(endpoints(ips=["10.0.0.2"], resourceVersion="1"))
    assert stale.status == 409 and status_of(stale) == failure(409, "Conflict")
    assert stale.body["message"] == (
        'Operation cannot be fulfilled on endpoints "kubelet": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert stale.body["details"] == {"name": "kubelet", "kind": "endpoints"}
    assert api.apply(endpoints(ips=["10.0.0.2"], resourceVersion=current)).status == 200


@pytest.mark.parametrize("kind", ["Endpoints", "EndpointSlice"])
def test_resource_version_and_uid_preconditions_on_delete(api: Api, kind: str) -> None:
    body = endpoints("obj") if kind == "Endpoints" else eslice("obj")
    stored = api.apply(body).body
    path = api.path(kind, "obj")
    qualified = kind if kind == "Endpoints" else f"{kind}.discovery.k8s.io"
    details = {"name": "obj", "kind": kind} | ({} if kind == "Endpoints" else {"group": "discovery.k8s.io"})
    stale = api.request("DELETE", path, {"preconditions": {"resourceVersion": "1"}})
    assert stale.status == 409 and status_of(stale) == failure(409, "Conflict")
    assert stale.body["message"] == (
        f'Operation cannot be fulfilled on {qualified} "obj": the ResourceVersion in the precondition (1) '
        f"does not match the ResourceVersion in record ({stored['metadata']['resourceVersion']}). "
        "The object might have been modified"
    )
    assert stale.body["details"] == details
    other = api.request("DELETE", path, {"preconditions": {"uid": "x"}})
    assert other.status == 409 and "the UID in the precondition (x) does not match" in other.body["message"]
    done = api.request(
        "DELETE", path, {"preconditions": {"resourceVersion": stored["metadata"]["resourceVersion"]}}
    )
    assert done.status == 200
    plural = "endpoints" if kind == "Endpoints" else "endpointslices"
    assert done.body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {**details, "kind": plural, "uid": stored["metadata"]["uid"]},
    }
    assert api.get(kind, "obj").status == 404


def test_a_delete_with_a_body_reads_its_options_from_the_body_alone(api: Api) -> None:
    """dryRun in the query beside a DeleteOptions body is ignored: the object is deleted for real."""
    for name in ("in-body", "in-query"):
        api.apply(endpoints(name))
    kept = api.request("DELETE", api.path("Endpoints", "in-body"), {"dryRun": ["All"], "preconditions": {}})
    assert kept.status == 200 and api.get("Endpoints", "in-body").status == 200
    gone = api.request(
        "DELETE", api.path("Endpoints", "in-query"), {"preconditions": {}}, query={"dryRun": "All"}
    )
    assert gone.status == 200 and api.get("Endpoints", "in-query").status == 404


# --- when an apply writes -------------------------------------------------------------------


def _sliced(endpoint: dict[str, Any]) -> dict[str, Any]:
    return eslice() | {"endpoints": [endpoint]}


@pytest.mark.parametrize(
    ("body", "writes"),
    [
        # True: v1.24 writes again (the merge before defaulting differs from the
        # stored object, so managedFields are re-stamped); current servers do not.
        (endpoints(annotations={}), True),
        (endpoints() | {"subsets": []}, True),
        (_sliced({"addresses": ["10.0.0.1"]}), True),  # the server adds conditions: {}
        (_sliced({"addresses": ["10.0.0.1"], "conditions": {}}), False),
        (_sliced({"addresses": ["10.0.0.1"], "conditions": {"ready": True}}), False),
        (endpoints(), False),
        (service(), False),  # Service ports merge item by item: defaults stay
    ],
    ids=[
        "empty-map",
        "empty-list",
        "slice-no-conditions",
        "slice-empty-conditions",
        "product-slice",
        "endpoints",
        "service",
    ],
)
def test_when_a_repeated_apply_writes(api: Api, body: dict[str, Any], writes: bool) -> None:
    first = api.apply(body)
    assert first.status == 201, first.body
    # v1.24 re-stamps managedFields' time (second resolution): wait a second.
    time.sleep(1.1)
    again = api.apply(body)
    assert again.status == 200
    # The README's table knows v1.24 (writes) and v1.35 (does not), not where it changed.
    assert (rv(again) != rv(first)) is (writes and api.minor <= OLD_MINOR)


# --- validation -----------------------------------------------------------------------------


def _with(body: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    change(out)
    return out


def _ep_ip(ip: str) -> dict[str, Any]:
    return endpoints(ips=[ip])


def _sl_ip(ip: str, family: str = "IPv4") -> dict[str, Any]:
    return eslice(ips=[ip], addressType=family)


R, INV, NS_, D, T = (
    "FieldValueRequired",
    "FieldValueInvalid",
    "FieldValueNotSupported",
    "FieldValueDuplicate",
    ("FieldValueTooMany"),
)
# (id, body, {(field, cause reason)}) for every rule the fake implements, as the real server answers.
INVALID: list[tuple[str, dict[str, Any], set[tuple[str, str]]]] = [
    ("svc-name", _with(service(), lambda b: b["metadata"].update(name="1kubelet")), {("metadata.name", INV)}),
    ("ep-name", _with(endpoints(), lambda b: b["metadata"].update(name="Kubelet")), {("metadata.name", INV)}),
    (
        "label-key",
        _with(endpoints(), lambda b: b["metadata"].update(labels={"-x": "a"})),
        {("metadata.labels", INV)},
    ),
    (
        "label-value",
        _with(endpoints(), lambda b: b["metadata"].update(labels={"a": "-x"})),
        {("metadata.labels", INV)},
    ),
    (
        "label-long",
        _with(endpoints(), lambda b: b["metadata"].update(labels={"a": "x" * 64})),
        {("metadata.labels", INV)},
    ),
    (
        "annotation-key",
        _with(endpoints(), lambda b: b["metadata"].update(annotations={"-x": "a"})),
        {("metadata.annotations", INV)},
    ),
    (
        "owner-uid",
        _with(
            endpoints(),
            lambda b: b["metadata"].update(
                ownerReferences=[{"apiVersion": "v1", "kind": "Service", "name": "k", "uid": ""}]
            ),
        ),
        {("metadata.ownerReferences.uid", INV)},
    ),
    ("svc-type", service(type="Foo"), {("spec.type", NS_)}),
    ("svc-cluster-ip", service(clusterIP="1.2.3"), {("spec.clusterIPs[0]", INV)}),
    ("svc-no-ports", service(ports=[], clusterIP=""), {("spec.ports", R)}),
    (
        "svc-port-names",
        service(ports=[{"port": 1}, {"port": 2}]),
        {("spec.ports[0].name", R), ("spec.ports[1].name", R)},
    ),
    ("svc-port-name", service(ports=[{"name": "Bad_", "port": 1}]), {("spec.ports[0].name", INV)}),
    (
        "svc-dup-name",
        service(ports=[{"name": "a", "port": 1}, {"name": "a", "port": 2}]),
        {("spec.ports[1].name", D)},
    ),
    (
        "svc-port",
        service(ports=[{"name": "a", "port": 70000}]),
        {("spec.ports[0].port", INV), ("spec.ports[0].targetPort", INV)},
    ),
    (
        "svc-protocol",
        service(ports=[{"name": "a", "port": 1, "protocol": "FOO"}]),
        {("spec.ports[0].protocol", NS_)},
    ),
    (
        "svc-target-name",
        service(ports=[{"name": "a", "port": 1, "targetPort": "a--b"}]),
        {("spec.ports[0].targetPort", INV)},
    ),
    ("svc-selector", service(selector={"a": "-x"}), {("spec.selector", INV)}),
    (
        "ep-empty-subset",
        _with(endpoints(), lambda b: b["subsets"][0].update(addresses=[])),
        {("subsets[0]", R)},
    ),
    ("ep-not-ip", _ep_ip("10.0.0"), {("subsets[0].addresses[0].ip", INV)}),
    ("ep-unspecified", _ep_ip("0.0.0.0"), {("subsets[0].addresses[0].ip", INV)}),
    ("ep-loopback", _ep_ip("127.0.0.1"), {("subsets[0].addresses[0].ip", INV)}),
    ("ep-link-local", _ep_ip("169.254.1.1"), {("subsets[0].addresses[0].ip", INV)}),
    ("ep-ll-multicast", _ep_ip("224.0.0.251"), {("subsets[0].addresses[0].ip", INV)}),
    ("ep-ll-multicast6", _ep_ip("ff02::1"), {("subsets[0].addresses[0].ip", INV)}),
    (
        "ep-node-name",
        _with(endpoints(), lambda b: b["subsets"][0]["addresses"][0].update(nodeName="A_b")),
        {("subsets[0].addresses[0].nodeName", INV)},
    ),
    (
        "ep-port-names",
        _with(endpoints(), lambda b: b["subsets"][0].update(ports=[{"port": 1}, {"port": 2}])),
        {("subsets[0].ports[0].name", R), ("subsets[0].ports[1].name", R)},
    ),
    (
        "ep-no-port",
        _with(endpoints(), lambda b: b["subsets"][0].update(ports=[{"name": "a"}])),
        {("subsets[0].ports[0].port", INV)},
    ),
    ("sl-no-family", _with(eslice(), lambda b: b.pop("addressType")), {("addressType", R)}),
    ("sl-family", eslice(addressType="IPv5"), {("addressType", NS_)}),
    ("sl-endpoints", eslice(ips=[f"10.1.{i // 250}.{i % 250 + 1}" for i in range(1001)]), {("endpoints", T)}),
    ("sl-no-address", eslice(endpoints=[{"addresses": []}]), {("endpoints[0].addresses", R)}),
    (
        "sl-addresses",
        eslice(endpoints=[{"addresses": [f"10.1.0.{i + 1}" for i in range(101)]}]),
        {("endpoints[0].addresses", T)},
    ),
    ("sl-v6-in-v4", _sl_ip("fd00::1"), {("endpoints[0].addresses", INV)}),
    ("sl-v4-in-v6", _sl_ip("10.0.0.1", "IPv6"), {("endpoints[0].addresses", INV)}),
    ("sl-not-ip", _sl_ip("node-1"), {("endpoints[0].addresses[0]", INV)}),
    ("sl-loopback", _sl_ip("127.0.0.1"), {("endpoints[0].addresses[0]", INV)}),
    ("sl-link-local6", _sl_ip("fe80::1", "IPv6"), {("endpoints[0].addresses[0]", INV)}),
    ("sl-unspecified", _sl_ip("0.0.0.0"), {("endpoints[0].addresses[0]", INV)}),
    ("sl-ll-multicast", _sl_ip("224.0.0.1"), {("endpoints[0].addresses[0]", INV)}),
    (
        "sl-node-name",
        eslice(endpoints=[{"addresses": ["10.0.0.1"], "nodeName": "A_b"}]),
        {("endpoints[0].nodeName", INV)},
    ),
    (
        "sl-hostname",
        eslice(endpoints=[{"addresses": ["10.0.0.1"], "hostname": "a.b"}]),
        {("endpoints[0].hostname", INV)},
    ),
    ("sl-port-name", eslice(ports=[{"name": "A_", "port": 1}]), {("ports[0].name", INV)}),
    (
        "sl-dup-port",
        eslice(ports=[{"name": "a", "port": 1}, {"name": "a", "port": 2}]),
        {("ports[1].name", D)},
    ),
    ("sl-unnamed-ports", eslice(ports=[{"port": 1}, {"port": 2}]), {("ports[1].name", D)}),
]


#: Where v1.24 names other causes than current servers (the rows above): an
#: address of the other family is blamed on the address, not the endpoint's list.
INVALID_V1_24: dict[str, set[tuple[str, str]]] = {
    "sl-v6-in-v4": {("endpoints[0].addresses[0]", INV)},
    "sl-v4-in-v6": {("endpoints[0].addresses[0]", INV)},
}


@pytest.mark.parametrize(
    ("body", "causes", "old_causes"),
    [(body, causes, INVALID_V1_24.get(name, causes)) for name, body, causes in INVALID],
    ids=[c[0] for c in INVALID],
)
def test_invalid_bodies_are_422_with_their_causes(
    api: Api, body: dict[str, Any], causes: set[tuple[str, str]], old_causes: set[tuple[str, str]]
) -> None:
    if api.minor <= OLD_MINOR:
        causes = old_causes
    got = api.apply(body)
    assert got.status == 422, got.body
    assert status_of(got) == failure(422, "Invalid")
    kind, name = body["kind"], body["metadata"]["name"]
    qualified = f"{kind}.discovery.k8s.io" if kind == "EndpointSlice" else kind
    assert got.body["message"].startswith(f'{qualified} "{name}" is invalid: ')
    details = got.body["details"]
    assert (details["name"], details["kind"], details.get("group")) == (
        name,
        kind,
        "discovery.k8s.io" if kind == "EndpointSlice" else None,
    )
    assert {(c["field"], c["reason"]) for c in details["causes"]} == causes
    assert api.get(kind, name).status == 404  # nothing written


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("ep-duplicate-ips", endpoints(ips=["10.0.0.1", "10.0.0.1"])),
    ("sl-duplicate-ips", eslice(ips=["10.0.0.1", "10.0.0.1"])),
    ("ep-multicast", _ep_ip("239.1.1.1")),
    ("sl-multicast", _sl_ip("239.1.1.1")),
    ("ep-1001-addresses", endpoints(ips=[f"10.1.{i // 250}.{i % 250 + 1}" for i in range(1001)])),
    ("sl-port-0", eslice(ports=[{"name": "a", "port": 0}])),
    ("sl-port-70000", eslice(ports=[{"name": "a", "port": 70000}])),
    ("sl-101-ports", eslice(ports=[{"name": f"p{i}", "port": i + 1} for i in range(101)])),
    ("sl-two-addresses", eslice(endpoints=[{"addresses": ["10.0.0.1", "10.0.0.2"]}])),
    ("sl-no-port-number", eslice(ports=[{"name": "a"}])),
]


@pytest.mark.parametrize("body", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_bodies_the_api_server_accepts(api: Api, body: dict[str, Any]) -> None:
    got = api.apply(body)
    assert got.status == 201, got.body


TYPED: list[tuple[str, dict[str, Any], str]] = [
    ("annotation-int", endpoints(annotations={"a": 1}), ".metadata.annotations.a: expected string"),
    ("subsets-map", endpoints() | {"subsets": {"a": 1}}, ".subsets: expected list"),
    (
        "target-ref",
        _with(endpoints(), lambda b: b["subsets"][0]["addresses"][0].update(targetRef="x")),
        "expected map",
    ),
    ("endpoints-string", eslice(endpoints="x"), ".endpoints: expected list"),
    (
        "condition-string",
        eslice(endpoints=[{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}]),
        "boolean",
    ),
]


@pytest.mark.parametrize(("body", "needle"), [c[1:] for c in TYPED], ids=[c[0] for c in TYPED])
def test_a_value_of_the_wrong_type_is_a_500(api: Api, body: dict[str, Any], needle: str) -> None:
    got = api.apply(body)
    assert got.status == 500
    assert {k: got.body.get(k) for k in ("kind", "status", "code", "reason")} == {
        "kind": "Status",
        "status": "Failure",
        "code": 500,
        "reason": None,
    }
    assert got.body["message"].startswith("failed to create typed patch object (/")
    assert needle in got.body["message"]


def test_bad_apply_options(api: Api) -> None:
    path = api.path("Endpoints", "kubelet")
    no_manager = api.request("PATCH", path, endpoints(), content_type=APPLY)
    assert no_manager.status == 422 and status_of(no_manager) == failure(422, "Invalid")
    assert no_manager.body["details"] == {
        "group": "meta.k8s.io",
        "kind": "PatchOptions",
        "causes": [
            {"reason": R, "message": "Required value: is required for apply patch", "field": "fieldManager"}
        ],
    }
    bad_dry = api.request(
        "PATCH", path, endpoints(), query={"fieldManager": "m", "dryRun": "x"}, content_type=APPLY
    )
    assert bad_dry.status == 422 and bad_dry.body["details"]["causes"][0]["field"] == "dryRun"
    wrong_version = api.request(
        "PATCH", path, endpoints() | {"apiVersion": "v2"}, query={"fieldManager": "m"}, content_type=APPLY
    )
    assert wrong_version.status == 400 and status_of(wrong_version) == failure(400, "BadRequest")
    other_name = api.request(
        "PATCH", api.path("Endpoints", "other"), endpoints(), query={"fieldManager": "m"}, content_type=APPLY
    )
    assert other_name.status == 400
    assert (
        other_name.body["message"]
        == "the name of the object (kubelet) does not match the name on the URL (other)"
    )
    assert api.get("Endpoints", "kubelet").status == 404


def test_changing_a_cluster_ip_is_422(api: Api) -> None:
    allocated = service()
    del allocated["spec"]["clusterIP"]
    assert api.apply(allocated).body["spec"]["clusterIP"]
    got = api.apply(service(clusterIP="None"))
    assert got.status == 422
    assert [(c["field"], c["reason"]) for c in got.body["details"]["causes"]] == [("spec.clusterIPs[0]", INV)]
    assert "may not change once set" in got.body["message"]


JSON_PATCH = "application/json-patch+json"


def test_a_json_patch_removes_fields_with_their_ownership_after_a_test_of_the_version(api: Api) -> None:
    """What --take-over's patch relies on: a failed test is 422 and changes nothing; removed
    fields are gone and owned by no one; no-one else's field is touched."""
    body = service(selector={"app": "other"})
    body["metadata"]["labels"]["team"] = "a"
    created = api.apply(body, "other")
    assert created.status == 201, created.body
    path = api.path("Service", "kubelet")
    version = created.body["metadata"]["resourceVersion"]

    def patch(value: str, *ops: dict[str, Any]) -> Reply:
        test = {"op": "test", "path": "/metadata/resourceVersion", "value": value}
        return api.request("PATCH", path, [test, *ops], content_type=JSON_PATCH)

    removals = (
        {"op": "remove", "path": "/spec/selector"},
        {"op": "remove", "path": "/spec/ports/1"},
        {"op": "remove", "path": "/metadata/labels/team"},
    )
    stale = patch(str(int(version) - 1), *removals)
    assert stale.status == 422 and stale.body["reason"] == "Invalid"
    assert rv(api.get("Service", "kubelet")) == int(version)
    got = patch(version, *removals)
    assert got.status == 200, got.body
    assert rv(got) > int(version)
    assert "selector" not in got.body["spec"] and got.body["metadata"]["labels"] == {"app": "kubelet"}
    assert ports_of(got.body) == [("https-metrics", 10250)]
    entries = {m["manager"]: m.get("fieldsV1") or {} for m in got.body["metadata"]["managedFields"]}
    entry = entries["other"]
    assert set(entry["f:metadata"]["f:labels"]) == {"f:app"}
    assert "f:selector" not in entry["f:spec"] and set(entry["f:spec"]["f:ports"]) == {key(10250)}
    # Nor does the patch's own manager own what it removed.
    assert not any("f:selector" in (e.get("f:spec") or {}) for e in entries.values())
    assert api.get("Service", "kubelet").body == got.body


# --- Status bodies of 401, 403 and 404 --------------------------------------------------------------


def test_403_for_a_token_with_no_rights(api: Api) -> None:
    api.apply(endpoints())
    ns = api.ns
    cases = [
        (
            "GET",
            api.path("Endpoints", "kubelet"),
            None,
            "get",
            'endpoints "kubelet"',
            {"name": "kubelet", "kind": "endpoints"},
        ),
        ("GET", api.path("Endpoints"), None, "list", "endpoints", {"kind": "endpoints"}),
        (
            "DELETE",
            api.path("Service", "kubelet"),
            None,
            "delete",
            'services "kubelet"',
            {"name": "kubelet", "kind": "services"},
        ),
        (
            "PATCH",
            api.path("EndpointSlice", "kubelet-a"),
            eslice(),
            "patch",
            'endpointslices.discovery.k8s.io "kubelet-a"',
            {"name": "kubelet-a", "group": "discovery.k8s.io", "kind": "endpointslices"},
        ),
    ]
    for method, path, body, verb, what, details in cases:
        got = api.request(
            method,
            path,
            body,
            query={"fieldManager": "m"} if body else None,
            token=api.nobody_token,
            content_type=APPLY,
        )
        assert got.status == 403 and status_of(got) == failure(403, "Forbidden")
        resource = details["kind"]
        group = details.get("group", "")
        assert got.body["message"] == (
            f'{what} is forbidden: User "nobody" cannot {verb} resource "{resource}" in API group "{group}" '
            f'in the namespace "{ns}"'
        )
        assert got.body["details"] == details
    nodes = api.request("GET", "/api/v1/nodes", token=api.nobody_token)
    assert nodes.status == 403 and nodes.body["message"].endswith('in API group "" at the cluster scope')
    assert api.request("GET", "/version", token=api.nobody_token).status == 200
    unknown = api.request("GET", api.path("Endpoints", "kubelet"), token="not-a-token")
    assert unknown.status == 401 and status_of(unknown) == failure(401, "Unauthorized")
    assert unknown.body["message"] == "Unauthorized"


@pytest.mark.parametrize("kind", ["Endpoints", "EndpointSlice"])
def test_404_status(api: Api, kind: str) -> None:
    for method in ("GET", "DELETE"):
        got = api.request(method, api.path(kind, "nope"))
        assert got.status == 404 and status_of(got) == failure(404, "NotFound")
        if kind == "Endpoints":
            assert got.body["message"] == 'endpoints "nope" not found'
            assert got.body["details"] == {"name": "nope", "kind": "endpoints"}
        else:
            assert got.body["message"] == 'endpointslices.discovery.k8s.io "nope" not found'
            assert got.body["details"] == {
                "name": "nope",
                "group": "discovery.k8s.io",
                "kind": "endpointslices",
            }
