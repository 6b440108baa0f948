"""The whole run, end to end: the real ``kubernetes`` client over real HTTP
against the fake API server, one test per documented rule and exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lib import desired, kube
from lib.exitcodes import ExitCode
from lib.run import main
from tests.fakeapi import FakeApiServer, Request, make_node
from tests.runs import Run, run_main, versions

ROOT = Path(__file__).resolve().parents[2]
NS = "kube-system"
SLICES = r"/apis/discovery\.k8s\.io/v1/namespaces/kube-system/endpointslices(/.*)?"
ENDPOINTS = "/api/v1/namespaces/kube-system/endpoints/kubelet"
SERVICE = "/api/v1/namespaces/kube-system/services/kubelet"
NODES = "/api/v1/nodes"


@pytest.fixture
def run(kubeconfig: str, tmp_path: Path) -> Any:
    """Run ``main`` in-process with the fake's kubeconfig (or another); parse its JSON log lines."""

    def _run(*args: str, environ: dict[str, str] | None = None, kubeconfig_: str | None = None) -> Run:
        argv = ["--kubeconfig", kubeconfig_ or kubeconfig, "--termination-log", "", *args]
        return run_main(argv, {"HOME": str(tmp_path)} if environ is None else environ)

    return _run


def endpoints_ips(fake: FakeApiServer) -> list[tuple[str, str]]:
    ep = fake.get_object("Endpoints", NS, "kubelet") or {}
    return [(a["ip"], a["nodeName"]) for s in ep.get("subsets") or () for a in s["addresses"]]


def slice_ips(fake: FakeApiServer) -> dict[str, list[tuple[str, str]]]:
    return {
        s["metadata"]["name"]: [(e["addresses"][0], e["nodeName"]) for e in s["endpoints"]]
        for s in fake.objects("EndpointSlice", NS)
    }


def writes(fake: FakeApiServer) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests if r.method in ("PATCH", "DELETE", "POST", "PUT")]


def nodes(n: int, prefix: str = "n", net: str = "10.0") -> list[dict[str, Any]]:
    return [make_node(f"{prefix}{i:04d}", f"{net}.{i // 250}.{i % 250 + 1}") for i in range(n)]


# --- the seed case and the node rules ------------------------------------------------


def test_ip_reuse_publishes_the_new_ready_node_only(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(
        [
            make_node("node-a", "1.2.3.4", ready="Unknown", created="2026-01-01T00:00:00Z"),
            make_node("node-b", "1.2.3.4", created="2026-06-01T00:00:00Z"),
        ]
    )
    r = run()
    assert r.code == ExitCode.OK
    assert endpoints_ips(fake) == [("1.2.3.4", "node-b")]
    assert slice_ips(fake) == {"kubelet-ipv4-0": [("1.2.3.4", "node-b")]}
    assert r.finished["outcome"] == "applied"
    assert r.finished["nodes_total"] == 2 and r.finished["nodes_eligible"] == 1
    assert r.finished["added"] == ["1.2.3.4"] and r.finished["removed"] == []


def test_two_ready_nodes_on_one_ip_newest_wins_and_is_reported(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(
        [
            make_node(
                "old", [("InternalIP", "10.0.0.1"), ("InternalIP", "fd00::1")], created="2026-01-01T00:00:00Z"
            ),
            make_node("new", "10.0.0.1", created="2026-02-01T00:00:00Z"),
            make_node("other", "10.0.0.2"),
        ]
    )
    r = run()
    assert endpoints_ips(fake) == [("10.0.0.1", "new"), ("10.0.0.2", "other")]
    # The loser is excluded entirely: its IPv6 address too.
    assert "kubelet-ipv6-0" not in slice_ips(fake)
    (conflict,) = r.named("ip_conflict")
    assert (conflict["ip"], conflict["winner"], conflict["losers"]) == ("10.0.0.1", "new", ["old"])
    assert conflict["level"] == "warning" and r.finished["ip_conflicts"] == 1


def test_only_ready_nodes_not_being_deleted_are_published(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(
        [
            make_node("ready", "10.0.0.1"),
            make_node("not-ready", "10.0.0.2", ready="False"),
            make_node("unknown", "10.0.0.3", ready="Unknown"),
            make_node("no-condition", "10.0.0.4", ready=None),
            make_node("deleting", "10.0.0.5", deleting=True),
        ]
    )
    assert run().code == 0
    assert endpoints_ips(fake) == [("10.0.0.1", "ready")]


def test_unusable_addresses_are_skipped_with_a_warning_naming_the_node(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(
        [
            make_node("good", "10.0.0.1"),
            make_node("loop", [("InternalIP", "127.0.0.1"), ("InternalIP", "10.0.0.2")]),
            make_node("junk", [("InternalIP", "not-an-ip")]),
            make_node("none", None),
        ]
    )
    r = run()
    assert r.code == 0
    assert endpoints_ips(fake) == [("10.0.0.1", "good"), ("10.0.0.2", "loop")]
    skipped = {(e["node"], e["reason"]) for e in r.named("node_skipped")}
    assert skipped == {
        ("loop", "loopback"),
        ("junk", "not_an_ip"),
        ("junk", "no_usable_address"),
        ("none", "no_usable_address"),
    }


def test_dual_stack_and_external_address_type(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(
        [
            make_node(
                "dual",
                [
                    ("InternalIP", "10.0.0.1"),
                    ("InternalIP", "fd00:0::1"),
                    ("ExternalIP", "192.0.2.1"),
                    ("Hostname", "dual"),
                ],
            ),
            make_node("internal-only", "10.0.0.2"),
        ]
    )
    assert run().code == 0
    assert slice_ips(fake) == {
        "kubelet-ipv4-0": [("10.0.0.1", "dual"), ("10.0.0.2", "internal-only")],
        "kubelet-ipv6-0": [("fd00::1", "dual")],
    }
    assert endpoints_ips(fake) == [("10.0.0.1", "dual"), ("10.0.0.2", "internal-only")]

    assert run("--address-type", "external").code == 0
    # The external address preferred; the fallback to InternalIP when a node has none.
    assert endpoints_ips(fake) == [("10.0.0.2", "internal-only"), ("192.0.2.1", "dual")]


def test_node_selector_filters_the_list(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(
        [
            make_node("worker", "10.0.0.1", labels={"role": "worker"}),
            make_node("gpu", "10.0.0.2", labels={"role": "gpu"}),
        ]
    )
    assert run("--node-selector", "role in (worker)").code == 0
    assert endpoints_ips(fake) == [("10.0.0.1", "worker")]
    assert all(r.query.get("labelSelector") == "role in (worker)" for r in fake.matching("GET", NODES))


# --- the objects written ------------------------------------------------------------------


def test_objects_are_written_by_forced_server_side_apply_as_spec_says(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(3))
    assert run("--http-metrics").code == 0
    patches = fake.matching("PATCH")
    assert [r.path.rsplit("/", 2)[-2] for r in patches] == ["services", "endpoints", "endpointslices"]
    for r in patches:
        assert r.content_type == "application/apply-patch+yaml"
        assert r.query == {"fieldManager": "kubelet-endpoints-reconciler", "force": "true"}
        body = r.json()
        assert {"apiVersion", "kind"} <= body.keys()
        assert body["metadata"]["namespace"] == NS and body["metadata"]["name"] == r.path.rsplit("/", 1)[1]

    svc = fake.get_object("Service", NS, "kubelet")
    assert svc is not None
    assert svc["spec"]["clusterIP"] == "None" and "selector" not in svc["spec"]
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [
        ("https-metrics", 10250),
        ("cadvisor", 4194),
        ("http-metrics", 10255),
    ]
    ep = fake.get_object("Endpoints", NS, "kubelet")
    assert ep is not None
    assert ep["metadata"]["labels"] == {
        "k8s-app": "kubelet",
        "app.kubernetes.io/name": "kubelet",
        "app.kubernetes.io/managed-by": "kubelet-endpoints-reconciler",
        "endpointslice.kubernetes.io/skip-mirror": "true",
    }
    address = ep["subsets"][0]["addresses"][0]
    node = fake.get_node(address["nodeName"])
    assert node is not None
    assert address["targetRef"] == {
        "kind": "Node",
        "apiVersion": "v1",
        "name": node["metadata"]["name"],
        "uid": node["metadata"]["uid"],
    }
    (sl,) = fake.objects("EndpointSlice", NS)
    assert sl["metadata"]["labels"]["kubernetes.io/service-name"] == "kubelet"
    assert (
        sl["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "kubelet-endpoints-reconciler"
    )
    (owner,) = sl["metadata"]["ownerReferences"]
    assert (
        owner["kind"] == "Service" and owner["uid"] == svc["metadata"]["uid"] and owner["controller"] is True
    )
    assert sl["endpoints"][0]["conditions"] == {"ready": True}


def test_second_run_writes_nothing_and_changes_no_resource_version(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes([*nodes(5), make_node("v6", [("InternalIP", "fd00::9")])])
    assert run().code == 0
    before = versions(fake)
    fake.clear_log()
    r = run()
    assert r.code == 0 and r.finished["outcome"] == "unchanged" and r.finished["writes"] == 0
    assert versions(fake) == before
    assert writes(fake) == []
    # The node list, one read per object, and the list of kubelet Services.
    assert [f"{q.method} {q.path}" for q in fake.requests] == [
        f"GET {NODES}",
        f"GET {SERVICE}",
        f"GET {ENDPOINTS}",
        "GET /apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
        "GET /api/v1/namespaces/kube-system/services",
    ]


def _slice_reads(fake: FakeApiServer) -> list[str]:
    """Each GET of the slice list: "whole" or "versions" (metadata only), "others" for other Services'."""
    return [
        "others"
        if "!=" in q.query.get("labelSelector", "")
        else "versions"
        if "as=PartialObjectMetadataList" in q.headers.get("accept", "")
        else "whole"
        for q in fake.requests
        if q.method == "GET" and q.path == "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
    ]


def test_after_its_writes_a_run_reads_the_slices_versions_not_the_slices(
    fake: FakeApiServer, run: Any
) -> None:
    fake.set_nodes(nodes(5))
    assert run("--max-endpoints-per-slice", "2").code == 0
    # A run that creates slices first lists the other Services' slices, for their names.
    assert _slice_reads(fake) == ["whole", "others", "versions"]
    fake.set_nodes(nodes(4))  # one node goes: one slice rewritten
    fake.clear_log()
    assert run("--max-endpoints-per-slice", "2").code == 0
    assert _slice_reads(fake) == ["whole", "versions"]


def test_a_slice_another_writer_changed_meanwhile_has_the_slices_read_whole(
    fake: FakeApiServer, run: Any
) -> None:
    fake.set_nodes(nodes(5))
    assert run("--max-endpoints-per-slice", "2").code == 0
    fake.set_nodes(nodes(4))
    fake.clear_log()
    done = False

    def meanwhile(request: Request) -> None:
        # At this run's first write, another writer relabels a slice this run leaves alone.
        nonlocal done
        if request.method == "PATCH" and not done:
            done = True
            obj = fake.objects("EndpointSlice", "kube-system")[0]
            obj["metadata"]["labels"]["team"] = "x"
            del obj["metadata"]["resourceVersion"]  # stored anew: a new version
            fake.put_object(obj)

    fake.on_request = meanwhile
    r = run("--max-endpoints-per-slice", "2")
    fake.on_request = None
    assert r.code == 0 and done
    assert _slice_reads(fake) == ["whole", "versions", "whole"]


def test_apply_bodies_are_byte_identical_for_the_same_cluster(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(2))
    assert run().code == 0
    fake.set_nodes(nodes(4))
    fake.clear_log()
    assert run("--dry-run").code == 0
    assert len(fake.matching("PATCH")) == 2  # Endpoints and the slice
    first = [r.body for r in fake.matching("PATCH")]
    fake.clear_log()
    fake.set_nodes(list(reversed(nodes(4))))
    assert run("--dry-run").code == 0
    assert [r.body for r in fake.matching("PATCH")] == first
    assert all(b"{}" not in body and b"[]" not in body for body in first)


def test_slices_split_at_max_endpoints_per_slice(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(7))
    assert run("--max-endpoints-per-slice", "3").code == 0
    assert {name: len(ips) for name, ips in slice_ips(fake).items()} == {
        "kubelet-ipv4-0": 3,
        "kubelet-ipv4-1": 3,
        "kubelet-ipv4-2": 1,
    }


def test_one_node_coming_or_going_rewrites_one_slice(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(9))
    assert run("--max-endpoints-per-slice", "3").code == 0
    before = versions(fake)

    gone = nodes(9)[4]["metadata"]["name"]  # in the middle slice
    fake.delete_node(gone)
    fake.clear_log()
    r = run("--max-endpoints-per-slice", "3")
    after = versions(fake)
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {"EndpointSlice/kubelet-ipv4-1", "Endpoints/kubelet"}
    assert r.finished["removed"] == ["10.0.0.5"]
    # The slice write was guarded by the resourceVersion it was read at.
    (patch,) = fake.matching("PATCH", SLICES)
    assert patch.json()["metadata"]["resourceVersion"] == before["EndpointSlice/kubelet-ipv4-1"]

    fake.put_node(make_node("newcomer", "10.9.9.9"))
    before = after
    assert run("--max-endpoints-per-slice", "3").code == 0
    after = versions(fake)
    # The newcomer fills the free room left in slice 1 rather than making a new slice.
    assert {k for k in after if after.get(k) != before.get(k)} == {
        "EndpointSlice/kubelet-ipv4-1",
        "Endpoints/kubelet",
    }
    assert ("10.9.9.9", "newcomer") in slice_ips(fake)["kubelet-ipv4-1"]


def test_emptied_slices_are_deleted(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes([*nodes(2), make_node("v6", [("InternalIP", "fd00::9")])])
    assert run().code == 0
    fake.delete_node("v6")
    fake.clear_log()
    assert run().code == 0
    assert set(slice_ips(fake)) == {"kubelet-ipv4-0"}
    (delete,) = fake.matching("DELETE")
    assert delete.path.endswith("/endpointslices/kubelet-ipv6-0")


def test_foreign_slice_is_left_alone_and_named(fake: FakeApiServer, run: Any) -> None:
    foreign = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubelet-ipv4-0",
            "namespace": NS,
            "labels": {
                "kubernetes.io/service-name": "kubelet",
                "endpointslice.kubernetes.io/managed-by": "prometheus-operator",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "n0000"}],
    }
    stored = fake.apply_as("prometheus-operator", foreign)
    fake.set_nodes(nodes(2))
    r = run()
    assert r.code == 0
    assert fake.get_object("EndpointSlice", NS, "kubelet-ipv4-0") == stored
    (warning,) = r.named("foreign_endpointslices")
    assert warning["names"] == ["kubelet-ipv4-0"]
    assert set(slice_ips(fake)) == {"kubelet-ipv4-0", "kubelet-ipv4-1"}
    assert all(not w.endswith("/kubelet-ipv4-0") for w in writes(fake))


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_slice_of_another_service_with_one_of_our_names_is_never_written(
    fake: FakeApiServer, run: Any, dry_run: bool
) -> None:
    other = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubelet-ipv4-0",
            "namespace": NS,
            "labels": {
                "kubernetes.io/service-name": "other",
                "endpointslice.kubernetes.io/managed-by": "other-controller",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.168.9.9"]}],
    }
    stored = fake.apply_as("other-controller", other)
    fake.set_nodes(nodes(3))
    r = run("--dry-run") if dry_run else run()
    assert r.code == 0, r.finished
    (warning,) = r.named("endpointslice_name_taken")
    assert (warning["name"], warning["service"], warning["managed_by"]) == (
        "kubelet-ipv4-0",
        "other",
        "other-controller",
    )
    assert fake.get_object("EndpointSlice", NS, "kubelet-ipv4-0") == stored
    assert all(not w.endswith("/kubelet-ipv4-0") for w in writes(fake))
    if dry_run:
        return
    # Every IP published all the same, under a name of our own.
    ours = {
        s["metadata"]["name"]: [e["addresses"][0] for e in s["endpoints"]]
        for s in fake.objects("EndpointSlice", NS)
        if s["metadata"]["labels"]["kubernetes.io/service-name"] == "kubelet"
    }
    assert ours == {"kubelet-ipv4-1": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}
    fake.clear_log()
    assert run().code == 0 and writes(fake) == []  # and the next run changes nothing


def _helm_service(fake: FakeApiServer, cluster_ip: str, **spec: Any) -> dict[str, Any]:
    """A Service of our name as another tool's plain create leaves it on a real API server: the
    server's defaults (type, sessionAffinity, internalTrafficPolicy) recorded as that tool's fields."""
    helm_spec: dict[str, Any] = {
        "f:internalTrafficPolicy": {},
        "f:ports": {".": {}, 'k:{"port":9100,"protocol":"TCP"}': {".": {}, "f:name": {}, "f:port": {}}},
        "f:sessionAffinity": {},
        "f:type": {},
        **{f"f:{name}": {} for name in spec},
    }
    if cluster_ip == "None":
        helm_spec["f:clusterIP"] = {}
    return fake.put_object(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kubelet",
                "namespace": NS,
                "labels": {"app.kubernetes.io/name": "node-exporter", "helm.sh/chart": "node-exporter-4.2"},
                "annotations": {"meta.helm.sh/release-name": "monitoring"},
                "managedFields": [
                    {
                        "manager": "helm",
                        "operation": "Update",
                        "apiVersion": "v1",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {
                            "f:metadata": {
                                "f:labels": {".": {}, "f:app.kubernetes.io/name": {}, "f:helm.sh/chart": {}},
                                "f:annotations": {".": {}, "f:meta.helm.sh/release-name": {}},
                            },
                            "f:spec": helm_spec,
                        },
                    }
                ],
            },
            "spec": {
                "clusterIP": cluster_ip,
                "clusterIPs": [cluster_ip],
                "type": "ClusterIP",
                "sessionAffinity": "None",
                "internalTrafficPolicy": "Cluster",
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "ports": [{"name": "metrics", "port": 9100, "protocol": "TCP", "targetPort": 9100}],
                **spec,
            },
        }
    )


@pytest.mark.parametrize("dry_run", [(), ("--dry-run",)], ids=["run", "dry-run"])
def test_a_cluster_ip_service_of_our_name_is_someone_elses_exit_6_before_any_write(
    fake: FakeApiServer, run: Any, dry_run: tuple[str, ...]
) -> None:
    """Its clusterIP may never become None: every apply would be refused, so none is tried."""
    fake.set_nodes(nodes(2))
    before = _helm_service(fake, "10.96.0.10", selector={"app": "node-exporter"})
    r = run("--take-over", *dry_run)
    assert r.code == ExitCode.WRITE_REJECTED, r.finished
    reason = r.finished["reason"]
    assert reason.startswith(
        "Service kube-system/kubelet belongs to someone else (field managers: helm):"
        " its spec.clusterIP is '10.96.0.10' and may not change"
    ), reason
    assert "--service-name" in reason and "operations.md" in reason
    assert writes(fake) == [] and fake.get_object("Service", NS, "kubelet") == before
    assert fake.objects("Endpoints", NS) == [] and fake.objects("EndpointSlice", NS) == []


def test_another_tools_headless_service_selector_and_all_is_warned_about_then_taken_over(
    fake: FakeApiServer, run: Any
) -> None:
    fake.set_nodes(nodes(2))
    _helm_service(fake, "None", selector={"app": "node-exporter"}, publishNotReadyAddresses=True)
    expected = [
        "metadata.annotations[meta.helm.sh/release-name]",
        "metadata.labels[helm.sh/chart]",
        'spec.ports[{"port":9100,"protocol":"TCP"}]',
        "spec.publishNotReadyAddresses",
        "spec.selector",
    ]
    r = run()
    assert r.code == 0, r.finished
    (warning,) = [w for w in r.named("foreign_fields") if w["kind"] == "Service"]
    assert (warning["fields"], warning["managers"]) == (expected, ["helm"])
    assert fake.get_object("Service", NS, "kubelet")["spec"]["selector"] == {"app": "node-exporter"}

    r = run("--take-over")
    assert r.code == 0, r.finished
    (removed,) = r.named("foreign_fields_removed")
    assert (removed["kind"], removed["fields"]) == ("Service", expected)
    svc = fake.get_object("Service", NS, "kubelet")
    assert "selector" not in svc["spec"] and "publishNotReadyAddresses" not in svc["spec"]
    assert [p["port"] for p in svc["spec"]["ports"]] == [10250, 4194]
    assert "annotations" not in svc["metadata"] and "helm.sh/chart" not in svc["metadata"]["labels"]
    # What helm still owns is what the server set itself, what we set too, and no port.
    (helm,) = [m for m in svc["metadata"]["managedFields"] if m["manager"] == "helm"]
    helm_spec = helm["fieldsV1"]["f:spec"]
    assert sorted(set(helm_spec) - {"f:ports"}) == [
        "f:clusterIP", "f:internalTrafficPolicy", "f:sessionAffinity", "f:type"
    ]  # fmt: skip
    assert not [k for k in helm_spec.get("f:ports", {}) if k.startswith("k:")]
    assert "f:annotations" not in helm["fieldsV1"]["f:metadata"]

    before = versions(fake)
    for args in ((), ("--take-over",)):
        again = run(*args)
        assert again.code == 0 and again.finished["writes"] == 0, again.finished
        assert not again.named("foreign_fields")
    assert versions(fake) == before


def test_endpoints_hold_every_address_past_1000_and_are_cut_only_past_the_size_bound(
    fake: FakeApiServer, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.set_nodes(nodes(1100))
    r = run("--max-endpoints-per-slice", "1000")
    assert r.code == 0
    ep = fake.get_object("Endpoints", NS, "kubelet")
    assert ep is not None
    assert len(ep["subsets"][0]["addresses"]) == 1100  # the endpoints controller's 1,000 is not ours
    assert "annotations" not in ep["metadata"] and r.named("endpoints_truncated") == []

    # Past the bound (made small here: 1,100 addresses are ~150 KB): cut, annotated, warned.
    monkeypatch.setattr(desired, "ENDPOINTS_MAX_BYTES", 64 << 10)
    r = run("--max-endpoints-per-slice", "1000")
    assert r.code == 0
    ep = fake.get_object("Endpoints", NS, "kubelet")
    assert ep is not None
    kept = len(ep["subsets"][0]["addresses"])
    assert 300 < kept < 1100
    assert ep["metadata"]["annotations"] == {"endpoints.kubernetes.io/over-capacity": "truncated"}
    (warning,) = r.named("endpoints_truncated")
    assert (warning["addresses"], warning["written"], warning["max_bytes"]) == (1100, kept, 64 << 10)
    assert "serviceDiscoveryRole: EndpointSlice" in warning["hint"]
    assert sum(len(v) for v in slice_ips(fake).values()) == 1100  # the slices hold every one

    # Back under the bound: the annotation goes (omitting it removes ours).
    monkeypatch.undo()
    assert run("--max-endpoints-per-slice", "1000").code == 0
    ep = fake.get_object("Endpoints", NS, "kubelet")
    assert ep is not None and "annotations" not in ep["metadata"]
    assert len(ep["subsets"][0]["addresses"]) == 1100


@pytest.mark.parametrize(
    ("resources", "kinds"),
    [("endpoints", {"services", "endpoints"}), ("endpointslices", {"services", "endpointslices"})],
)
def test_resources_limits_what_is_read_and_written(
    fake: FakeApiServer, run: Any, resources: str, kinds: set[str]
) -> None:
    fake.set_nodes(nodes(2))
    assert run("--resources", resources).code == 0
    touched = {r.path.split("/")[r.path.split("/").index("namespaces") + 2] for r in fake.requests[1:]}
    assert touched == kinds
    if resources == "endpointslices":
        assert fake.get_object("Endpoints", NS, "kubelet") is None


def test_paged_node_list(fake: FakeApiServer, run: Any) -> None:
    fake.page_cap = 4
    fake.set_nodes(nodes(10))
    r = run()
    assert r.code == 0
    lists = fake.matching("GET", NODES)
    assert len(lists) == 3 and "continue" not in lists[0].query
    assert all("continue" in q.query for q in lists[1:])
    assert len(endpoints_ips(fake)) == 10
    assert r.named("nodes_listed")[0]["pages"] == 3


def test_expired_continue_token_restarts_the_list(fake: FakeApiServer, run: Any) -> None:
    fake.page_cap = 4
    fake.set_nodes(nodes(10))
    fake.inject("GET", NODES, status=410, query={"continue": True})
    r = run()
    assert r.code == 0
    assert len(endpoints_ips(fake)) == 10
    assert len(r.named("node_list_restarted")) == 1
    assert [("continue" in q.query, q.status) for q in fake.matching("GET", NODES)] == [
        (False, 200),
        (True, 410),
        (False, 200),
        (True, 200),
        (True, 200),
    ]


def test_the_slice_list_is_paged_and_restarts_on_an_expired_token(
    fake: FakeApiServer, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Paged like the node list (a page decodes at most OBJECT_PAGE_SIZE
    # items): at 2 a page, 5 slices take 3 pages, and a 410 on a continue
    # token starts the slice list again.
    fake.set_nodes(nodes(10))
    assert run("--max-endpoints-per-slice", "2").code == 0
    fake.clear_log()
    monkeypatch.setattr(kube.api, "OBJECT_PAGE_SIZE", 2)
    collection = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
    fake.inject("GET", collection, status=410, query={"continue": True})
    r = run("--max-endpoints-per-slice", "2")
    assert r.code == 0 and r.finished["writes"] == 0, r.finished
    assert len(r.named("list_restarted")) == 1
    assert r.named("list_restarted")[0]["kind"] == "endpointslice"
    lists = [("continue" in q.query, q.status) for q in fake.matching("GET", collection)]
    assert lists == [(False, 200), (True, 410), (False, 200), (True, 200), (True, 200)]


def test_dry_run_sends_dry_run_on_every_write_and_stores_nothing(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes([*nodes(3), make_node("v6", [("InternalIP", "fd00::9")])])
    r = run("--dry-run")
    assert r.code == 0 and r.finished["outcome"] == "dry_run"
    assert len(fake.matching("PATCH")) == 4
    assert all(q.query.get("dryRun") == "All" for q in fake.requests if q.method == "PATCH")
    assert versions(fake) == {}

    assert run().code == 0
    fake.delete_node("v6")
    fake.clear_log()
    before = versions(fake)
    assert run("--dry-run").code == 0
    (delete,) = fake.matching("DELETE")
    # In the DeleteOptions body, not the query: with a body, the API server
    # ignores the query, and a dry run beside a precondition deleted for real.
    assert delete.query == {} and delete.json()["dryRun"] == ["All"]
    assert delete.json()["preconditions"]["resourceVersion"]
    assert versions(fake) == before


# --- safety: the empty-set guard -----------------------------------------------------------


def test_empty_set_never_replaces_a_published_one(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(3))
    assert run().code == 0
    before = versions(fake)
    fake.set_nodes([make_node(f"n{i:04d}", f"10.0.0.{i + 1}", ready="False") for i in range(3)])
    fake.clear_log()
    r = run()
    assert r.code == ExitCode.SAFETY_GUARD
    assert "--allow-empty" in r.finished["reason"]
    assert writes(fake) == [] and versions(fake) == before

    r = run("--allow-empty")
    assert r.code == 0
    ep = fake.get_object("Endpoints", NS, "kubelet")
    assert ep is not None and "subsets" not in ep
    assert fake.objects("EndpointSlice", NS) == []
    # Empty over empty is no longer a guard case.
    assert run().code == 0


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_take_over_never_deletes_the_last_targets_prometheus_has(
    fake: FakeApiServer, run: Any, dry_run: bool
) -> None:
    # prometheus-operator's slice is all Prometheus discovers; no node is
    # eligible (a --node-selector matching nothing): deleting it would leave
    # no kubelet target at all, so the guard trips, dry run or not.
    fake.apply_as(
        "prometheus-operator",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubelet-abcde",
                "namespace": NS,
                "labels": {
                    "kubernetes.io/service-name": "kubelet",
                    "endpointslice.kubernetes.io/managed-by": "prometheus-operator",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "n0000"}],
        },
    )
    fake.set_nodes(nodes(2))
    before = versions(fake)
    flags = ["--resources", "endpointslices", "--take-over", "--node-selector", "role=none"]
    r = run(*flags, *(["--dry-run"] if dry_run else []))
    assert r.code == ExitCode.SAFETY_GUARD, r.finished
    assert "refusing to replace 1 published IPs" in r.finished["reason"]
    assert writes(fake) == [] and versions(fake) == before
    # Told to, it goes ahead: the operator's slice is deleted, nothing replaces it.
    assert run(*flags, "--allow-empty").code == 0
    assert fake.objects("EndpointSlice", NS) == []


def test_a_run_that_deletes_its_last_slice_reads_the_empty_metadata_list_as_empty(
    fake: FakeApiServer, run: Any
) -> None:
    # After its writes a run lists its slices' versions, metadata only; with
    # none left, kube-apiserver answers "items": null (the fake too): no slice.
    fake.set_nodes(nodes(2))
    assert run().code == 0
    fake.set_nodes([])
    fake.clear_log()
    r = run("--allow-empty")
    assert r.code == 0, r.finished
    assert fake.objects("EndpointSlice", NS) == []
    metadata_lists = [
        q for q in fake.matching("GET", SLICES) if "PartialObjectMetadataList" in q.headers.get("accept", "")
    ]
    assert len(metadata_lists) == 1 and metadata_lists[0].status == 200


def test_a_selector_matching_nothing_trips_the_guard(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(3))
    assert run().code == 0
    fake.clear_log()
    assert run("--node-selector", "role=typo").code == ExitCode.SAFETY_GUARD
    assert writes(fake) == []


# --- faults and exit codes -----------------------------------------------------------------


def test_429_with_retry_after_is_honoured(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(2))
    fake.inject("GET", NODES, status=429, retry_after="1")
    r = run()
    assert r.code == 0
    first, second = (q for q in fake.matching("GET", NODES))
    assert first.status == 429 and second.status == 200
    (retry,) = r.named("api_retry")
    assert retry["sleep_s"] == 1.0 and r.seconds >= 1.0


def test_retry_after_beyond_the_deadline_stops_at_once(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(2))
    fake.inject("GET", NODES, status=429, retry_after="30", times=-1)
    r = run("--timeout", "5")
    assert r.code == ExitCode.API_UNAVAILABLE and r.seconds < 1.5
    assert len(fake.requests) == 1 and r.named("api_retry") == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_transient_errors_are_retried(fake: FakeApiServer, run: Any, status: int) -> None:
    fake.set_nodes(nodes(2))
    fake.inject("PATCH", SLICES, status=status, times=2)
    r = run()
    assert r.code == 0 and len(r.named("api_retry")) == 2
    assert len(slice_ips(fake)["kubelet-ipv4-0"]) == 2


def test_persistent_503_ends_with_exit_4_inside_the_deadline(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(2))
    fake.inject("*", ".*", status=503, times=-1)
    r = run("--timeout", "3")
    assert r.code == ExitCode.API_UNAVAILABLE
    assert r.seconds < 3.5
    assert 3 <= len(fake.requests) <= 10  # it did retry, with backoff, and no storm at the end
    assert writes(fake) == [] and "503" in r.finished["reason"]


def test_hung_server_ends_with_exit_4_inside_the_deadline(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(2))
    fake.inject("GET", NODES, hang=10, times=-1)
    r = run("--timeout", "2")
    assert r.code == ExitCode.API_UNAVAILABLE
    assert r.seconds < 2.5
    assert versions(fake) == {}


def test_connection_refused_ends_with_exit_4(fake: FakeApiServer, run: Any, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = fake.write_kubeconfig(tmp_path / "refused", server=f"http://127.0.0.1:{port}")
    r = run("--timeout", "2", kubeconfig_=path)
    assert r.code == ExitCode.API_UNAVAILABLE and r.seconds < 2.5
    assert "Connection refused" in r.finished["reason"] or "refused" in r.finished["reason"].lower()


def test_403_ends_with_exit_5_without_a_retry_storm(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(2))
    fake.forbid("GET", NODES)
    r = run()
    assert r.code == ExitCode.FORBIDDEN
    assert len(fake.requests) == 1
    assert "403" in r.finished["reason"]


def test_401_ends_with_exit_5(fake: FakeApiServer, run: Any, tmp_path: Path) -> None:
    fake.set_nodes(nodes(2))
    path = fake.write_kubeconfig(tmp_path / "bad-token", token="wrong")
    r = run(kubeconfig_=path)
    assert r.code == ExitCode.FORBIDDEN and len(fake.requests) == 1


def test_422_ends_with_exit_6(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(2))
    fake.inject("PATCH", ENDPOINTS, status=422)
    r = run()
    assert r.code == ExitCode.WRITE_REJECTED
    assert len(fake.matching("PATCH", ENDPOINTS)) == 1  # never retried
    assert fake.objects("EndpointSlice", NS) == []  # and nothing after it


def test_persistent_409_on_a_slice_ends_with_exit_6_after_replanning(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(2))
    fake.inject("PATCH", SLICES, status=409, times=-1)
    r = run()
    assert r.code == ExitCode.WRITE_REJECTED
    assert len(r.named("write_conflict")) == 3
    assert len(fake.matching("PATCH", SLICES)) == 4


def test_slice_changed_since_read_is_replanned_not_overwritten(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(3))
    assert run().code == 0
    fake.delete_node("n0001")
    # Another run (or anyone) changes the slice between our read and our write.
    fake.on_request = None
    fake.inject("PATCH", SLICES, status=409, times=1)
    r = run()
    assert r.code == 0 and len(r.named("write_conflict")) == 1
    assert slice_ips(fake) == {"kubelet-ipv4-0": [("10.0.0.1", "n0000"), ("10.0.0.3", "n0002")]}


def test_no_kubeconfig_ends_with_exit_3(fake: FakeApiServer, tmp_path: Path, capsys: Any) -> None:
    code = main(["--termination-log", ""], {"HOME": str(tmp_path)})
    assert code == ExitCode.CONFIG
    assert "no kubeconfig" in capsys.readouterr().out


def test_missing_context_and_malformed_kubeconfig_end_with_exit_3(
    fake: FakeApiServer, run: Any, tmp_path: Path
) -> None:
    assert run("--context", "nope").code == ExitCode.CONFIG
    bad = tmp_path / "bad"
    bad.write_text("apiVersion: v1\nclusters: [oops\n")
    assert run(kubeconfig_=str(bad)).code == ExitCode.CONFIG
    assert fake.requests == []


def test_context_flag_selects_the_context(fake: FakeApiServer, run: Any, tmp_path: Path) -> None:
    fake.set_nodes(nodes(1))
    path = tmp_path / "ctx"
    config = json.loads(Path(fake.write_kubeconfig(path, context="other")).read_text())
    # The current context is another one, whose token the server refuses: a
    # run that ignored --context would end with exit 5, not 0.
    config["clusters"].append({"name": "current", "cluster": {"server": fake.url}})
    config["users"].append({"name": "current", "user": {"token": "not-the-token"}})
    config["contexts"].append({"name": "current", "context": {"cluster": "current", "user": "current"}})
    config["current-context"] = "current"
    path.write_text(json.dumps(config))
    assert run(kubeconfig_=str(path)).code == ExitCode.FORBIDDEN
    fake.clear_log()
    assert run("--context", "other", kubeconfig_=str(path)).code == 0
    assert fake.requests and all(r.headers["authorization"] == f"Bearer {fake.token}" for r in fake.requests)


def test_tls_failure_ends_with_exit_3(fake: FakeApiServer, run: Any, tmp_path: Path) -> None:
    path = fake.write_kubeconfig(tmp_path / "tls", server=fake.url.replace("http://", "https://"))
    r = run("--timeout", "5", kubeconfig_=path)
    assert r.code == ExitCode.CONFIG and "TLS" in r.finished["reason"]


@pytest.mark.parametrize("fault", [{"body": b"<html>bad gateway</html>"}, {"truncate": True}])
def test_garbled_responses_are_retried(fake: FakeApiServer, run: Any, fault: dict[str, Any]) -> None:
    fake.set_nodes(nodes(2))
    fake.inject("GET", NODES, times=1, **fault)
    r = run()
    assert r.code == 0 and len(r.named("api_retry")) == 1


def test_malformed_node_items_write_nothing(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(2))
    assert run().code == 0
    before = versions(fake)
    fake.put_node({"metadata": {"name": "broken"}})  # no status
    fake.clear_log()
    r = run()
    assert r.code == ExitCode.API_UNAVAILABLE and "broken" in r.finished["reason"]
    assert writes(fake) == [] and versions(fake) == before


def test_a_failed_page_writes_nothing(fake: FakeApiServer, run: Any) -> None:
    fake.page_cap = 2
    fake.set_nodes(nodes(6))
    fake.inject("GET", NODES, status=503, times=-1, query={"continue": True})
    r = run("--timeout", "2")
    assert r.code == ExitCode.API_UNAVAILABLE
    assert writes(fake) == []


def test_rejected_label_selector_is_a_usage_error(fake: FakeApiServer, run: Any) -> None:
    r = run("--node-selector", "role in (")
    assert r.code == ExitCode.USAGE and "--node-selector" in r.finished["reason"]
    assert writes(fake) == []


@pytest.mark.parametrize(
    "args",
    [
        ["--max-endpoints-per-slice", "0"],
        ["--timeout", "-1"],
        ["--resources", "pods"],
        ["--bogus"],
        ["--address-type", "both"],
    ],
)
def test_bad_flags_end_with_exit_2(fake: FakeApiServer, run: Any, args: list[str]) -> None:
    r = run(*args)
    assert r.code == ExitCode.USAGE and r.finished["reason"]
    assert fake.requests == []


def test_environment_variables_configure_the_run(fake: FakeApiServer, run: Any, tmp_path: Path) -> None:
    fake.set_nodes(nodes(2))
    env = {
        "HOME": str(tmp_path),
        "KUBELET_ENDPOINTS_SERVICE_NAME": "kubelet-x",
        "KUBELET_ENDPOINTS_DRY_RUN": "1",
    }
    r = run(environ=env)
    assert r.code == 0 and r.finished["outcome"] == "dry_run"
    assert all("/kubelet-x" in q.path for q in fake.matching("PATCH"))


def test_kubeconfig_from_the_environment(
    fake: FakeApiServer, kubeconfig: str, tmp_path: Path, capsys: Any
) -> None:
    fake.set_nodes(nodes(1))
    assert main(["--termination-log", ""], {"HOME": str(tmp_path), "KUBECONFIG": kubeconfig}) == 0


def test_in_cluster_config(fake: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.config import incluster_config

    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("fake-token")
    ca.write_text("not used over plain http\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    host, port = fake.url.removeprefix("http://").split(":")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    fake.set_nodes(nodes(1))
    # The loader builds an https URL; point it back at the plain-HTTP fake.
    real = incluster_config.InClusterConfigLoader._set_config

    def plain_http(self: Any, client_configuration: Any) -> None:
        real(self, client_configuration)
        client_configuration.host = fake.url

    monkeypatch.setattr(incluster_config.InClusterConfigLoader, "_set_config", plain_http)
    code = main(["--termination-log", ""], {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": host})
    assert code == 0
    assert fake.requests[0].headers["authorization"] == "bearer fake-token"


def test_console_log_format(
    fake: FakeApiServer, run: Any, capsys: Any, kubeconfig: str, tmp_path: Path
) -> None:
    fake.set_nodes(nodes(1))
    code = main(["--kubeconfig", kubeconfig, "--log-format", "console", "--termination-log", ""], {})
    out = capsys.readouterr().out
    assert code == 0
    assert "reconcile_finished" in out and "outcome=applied" in out and not out.lstrip().startswith("{")


def test_internal_error_is_exit_1_with_a_traceback(
    fake: FakeApiServer, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lib import desired

    def broken(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(desired, "select", broken)
    fake.set_nodes(nodes(1))
    r = run()
    assert r.code == ExitCode.INTERNAL and r.finished["reason"] == "RuntimeError: boom"
    assert "boom" in json.dumps(r.named("internal_error")[0])


def test_the_script_exits_with_the_code(fake: FakeApiServer, kubeconfig: str, tmp_path: Path) -> None:
    fake.set_nodes(nodes(2))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    args = [sys.executable, str(ROOT / "reconciler.py"), "--kubeconfig", kubeconfig, "--termination-log", ""]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["event"] == "reconcile_finished" and last["outcome"] == "applied"
    fake.forbid("*", ".*")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == ExitCode.FORBIDDEN
    assert done.stderr == ""  # no traceback


def test_client_library_logs_go_through_the_same_json_pipeline(fake: FakeApiServer, run: Any) -> None:
    fake.set_nodes(nodes(1))
    r = run("--log-level", "debug")
    assert r.code == 0
    urllib3_lines = [e for e in r.events if str(e.get("logger", "")).startswith("urllib3")]
    assert urllib3_lines and all({"timestamp", "level", "event"} <= e.keys() for e in urllib3_lines)


def test_a_server_trickling_bytes_cannot_hold_the_run_past_its_deadline(
    fake: FakeApiServer, run: Any, tmp_path: Path
) -> None:
    import socket
    import threading

    # Each read gets a byte in time, so no socket timeout fires; only the
    # run's own deadline can end this.
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
            )
            while not stop.wait(0.1):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        path = fake.write_kubeconfig(tmp_path / "trickle", server=f"http://127.0.0.1:{port}")
        r = run("--timeout", "2", kubeconfig_=path)
    finally:
        stop.set()
        listener.close()
    assert r.code == ExitCode.API_UNAVAILABLE and "deadline" in r.finished["reason"]
    assert r.seconds < 2.9


@pytest.mark.parametrize(
    ("version", "resources", "warned"),
    [
        ("1.35", "endpoints,endpointslices", True),
        ("1.35", "endpointslices", False),  # no v1 Endpoints request, no deprecation warning
        ("1.24", "endpoints,endpointslices", False),  # before v1.33 Endpoints were not deprecated
    ],
)
def test_each_server_warning_is_logged_once_a_run(
    version: str, resources: str, warned: bool, tmp_path: Path
) -> None:
    with FakeApiServer(version=version) as fake:
        fake.set_nodes(nodes(3))
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        r = run_main(["--kubeconfig", kubeconfig, "--termination-log", "", "--resources", resources], {})
        assert r.code == 0, r.finished
        endpoints_requests = [q for q in fake.requests if q.path == ENDPOINTS]
        assert len(endpoints_requests) == (2 if "endpoints," in resources else 0)  # a read, an apply
        logged = [(e["warning"], e["request"]) for e in r.named("api_warning")]
        if warned:
            # The server warned on each Endpoints request; the run says it once, naming the first.
            assert logged == [
                (
                    "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice",
                    f"GET {ENDPOINTS}",
                )
            ]
        else:
            assert logged == []


@pytest.mark.parametrize(
    ("header", "texts"),
    [
        (None, []),
        ('299 - "one"', ["one"]),
        ('299 - "one", 299 - "two, with a comma"', ["one", "two, with a comma"]),
        ('299 - "unknown field \\"spec.foo\\""', ['unknown field "spec.foo"']),
        ("not a warning", []),
    ],
)
def test_warning_headers_are_read_as_the_server_sends_them(header: str | None, texts: list[str]) -> None:
    assert kube.warning_texts(header) == texts


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_an_ipv6_only_node_the_endpointslice_role_cannot_see_is_named_every_run(
    fake: FakeApiServer, run: Any, dry_run: bool
) -> None:
    fake.set_nodes([*nodes(2), make_node("v6-only", "fd00::9")])
    for _ in range(2):  # the first run (the Service from its apply answer) and the next
        r = run("--dry-run") if dry_run else run()
        assert r.code == 0, r.finished
        (missed,) = r.named("endpointslice_role_misses_nodes")
        assert (missed["nodes"], missed["count"], missed["family"]) == (["v6-only"], 1, "IPv4")
    if not dry_run:
        # Published all the same: in the IPv6 slice and in the Endpoints, where the endpoints role finds it.
        assert "fd00::9" in [ip for ip, _ in endpoints_ips(fake)]
        v6 = fake.get_object("EndpointSlice", NS, "kubelet-ipv6-0")
        assert [e["addresses"] for e in v6["endpoints"]] == [["fd00::9"]]
