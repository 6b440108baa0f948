"""The reconciler against a real kube-apiserver (the real-server tier).

Each test has a namespace of its own on the session's server; Nodes are
cluster-wide, so the ``real`` fixture removes every Node first. Runs go
through ``lib.run.main`` with the real ``kubernetes`` client over HTTPS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from lib import desired
from lib.kube import Api, Deadline, WriteConflict, load_client
from tests.fakeapi import make_node
from tests.fakeapi.versions import server_minor
from tests.real.prometheus_operator import OPERATOR, SLICES, operator_objects, seed_case
from tests.realserver import RealApiServer
from tests.runs import Run, run_main

pytestmark = pytest.mark.real


def nodes(n: int, prefix: str = "n") -> list[dict[str, Any]]:
    return [
        make_node(f"{prefix}{i:05d}", f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}") for i in range(n)
    ]


def reconcile(real: RealApiServer, tmp_path: Path, ns: str, *args: str, token: str | None = None) -> Run:
    kubeconfig = real.write_kubeconfig(tmp_path / f"kubeconfig-{token or 'admin'}", token=token)
    argv = ["--kubeconfig", kubeconfig, "--namespace", ns, "--termination-log", "", *args]
    return run_main(argv, {"HOME": str(tmp_path)})


def published(real: RealApiServer, ns: str, service: str = "kubelet") -> tuple[list[str], list[str]]:
    """(Endpoints IPs, every slice IP of the Service), each sorted, duplicates kept."""
    ep = real.get(f"/api/v1/namespaces/{ns}/endpoints/{service}").body or {}
    ep_ips = sorted(a["ip"] for s in ep.get("subsets") or () for a in s.get("addresses") or ())
    slices = real.ok(
        "GET", SLICES.format(ns=ns), query={"labelSelector": f"kubernetes.io/service-name={service}"}
    )
    slice_ips = sorted(a for s in slices["items"] for e in s.get("endpoints") or () for a in e["addresses"])
    return ep_ips, slice_ips


def test_second_run_over_an_unchanged_cluster_writes_nothing_at_1150_nodes(
    real: RealApiServer, tmp_path: Path
) -> None:
    real.create_nodes(nodes(1150))
    ns = real.new_namespace()
    first = reconcile(real, tmp_path, ns)
    assert first.code == 0, first.finished
    assert first.named("nodes_listed")[0]["pages"] == 3
    assert first.finished["writes"] == 2 + 12  # Service, Endpoints, 12 slices of 100
    before = real.versions(ns)
    second = reconcile(real, tmp_path, ns)
    assert second.code == 0 and second.finished["outcome"] == "unchanged"
    assert second.finished["writes"] == 0
    assert real.versions(ns) == before
    ep, sl = published(real, ns)
    # Every address in the Endpoints too (Prometheus' default role reads them), each once.
    assert ep == sl and len(sl) == 1150 == len(set(sl))
    endpoints = real.get(f"/api/v1/namespaces/{ns}/endpoints/kubelet").body
    assert "annotations" not in endpoints["metadata"]
    assert first.named("endpoints_truncated") == []


def test_one_node_change_rewrites_one_slice_and_the_endpoints(real: RealApiServer, tmp_path: Path) -> None:
    real.create_nodes(nodes(250))
    ns = real.new_namespace()
    assert reconcile(real, tmp_path, ns).code == 0
    before = real.versions(ns)
    real.ok("DELETE", "/api/v1/nodes/n00120")
    r = reconcile(real, tmp_path, ns)
    assert r.code == 0 and r.finished["writes"] == 2
    after = real.versions(ns)
    changed = sorted(k for k in before if before[k] != after.get(k))
    assert changed == ["endpoints/kubelet", "endpointslices/kubelet-ipv4-1"]
    assert r.finished["removed"] == ["10.0.0.121"]


@pytest.mark.parametrize("service", ["kubelet", "kube-prometheus-stack-kubelet"])
def test_after_prometheus_operator_warn_then_take_over_then_write_nothing(
    real: RealApiServer, tmp_path: Path, service: str
) -> None:
    seed_case(real)
    ns = real.new_namespace()
    operator_objects(real, ns, service)
    assert published(real, ns, service)[0].count("1.2.3.4") == 2  # the duplicate target

    plain = reconcile(real, tmp_path, ns, "--service-name", service)
    assert plain.code == 0, plain.finished
    assert plain.finished["reassigned"] == [{"ip": "1.2.3.4", "from": "node-a", "to": "node-b"}]
    (foreign_slices,) = plain.named("foreign_endpointslices")
    assert foreign_slices["managed_by"] == [OPERATOR]
    fields = {w["kind"]: w["fields"] for w in plain.named("foreign_fields")}
    assert fields["Service"] == ['spec.ports[{"port":10255,"protocol":"TCP"}]']
    # Without --take-over the operator's port and slice stay, warned about, and cost no write later.
    again = reconcile(real, tmp_path, ns, "--service-name", service)
    assert again.finished["writes"] == 0 and again.named("foreign_endpointslices")

    taken = reconcile(real, tmp_path, ns, "--service-name", service, "--take-over")
    assert taken.code == 0, taken.finished
    assert len(taken.named("foreign_endpointslice_deleted")) == 1
    svc = real.ok("GET", f"/api/v1/namespaces/{ns}/services/{service}")
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [
        ("https-metrics", 10250),
        ("cadvisor", 4194),
    ]
    ep_ips, slice_ips = published(real, ns, service)
    assert ep_ips == slice_ips == ["1.2.3.4", "10.0.0.5", "10.0.0.6"]
    ep = real.ok("GET", f"/api/v1/namespaces/{ns}/endpoints/{service}")
    assert {a["ip"]: a["nodeName"] for a in ep["subsets"][0]["addresses"]}["1.2.3.4"] == "node-b"
    ours = {"k8s-app", "app.kubernetes.io/name", "app.kubernetes.io/managed-by", desired.SKIP_MIRROR}
    assert set(ep["metadata"]["labels"]) == ours

    before = real.versions(ns)
    for args in ((), ("--take-over",)):
        after = reconcile(real, tmp_path, ns, "--service-name", service, *args)
        assert after.code == 0 and after.finished["writes"] == 0, after.finished
        assert not after.named("foreign_fields") and not after.named("foreign_endpointslices")
    assert real.versions(ns) == before


def test_dry_run_take_over_shows_what_it_would_do_and_changes_nothing(
    real: RealApiServer, tmp_path: Path
) -> None:
    seed_case(real)
    ns = real.new_namespace()
    operator_objects(real, ns, "kubelet")
    before = real.versions(ns)
    r = reconcile(real, tmp_path, ns, "--take-over", "--dry-run")
    assert r.code == 0 and r.finished["outcome"] == "dry_run"
    assert r.named("foreign_fields_removed") and r.named("foreign_endpointslice_deleted")
    assert real.versions(ns) == before


def test_another_kubelet_service_is_warned_about_and_left_alone(real: RealApiServer, tmp_path: Path) -> None:
    real.create_nodes(nodes(3))
    ns = real.new_namespace()
    operator_objects(real, ns, "kps-kubelet")
    before = real.versions(ns)
    r = reconcile(real, tmp_path, ns, "--take-over")
    assert r.code == 0
    assert r.named("foreign_kubelet_service")[0]["names"] == ["kps-kubelet"]
    after = real.versions(ns)
    assert {k: v for k, v in after.items() if "kps-kubelet" in k} == {
        k: v for k, v in before.items() if "kps-kubelet" in k
    }


def test_a_take_over_patch_on_a_changed_object_is_a_write_conflict(
    real: RealApiServer, tmp_path: Path
) -> None:
    """The JSON patch's resourceVersion test fails with a bare 422 on the real server: re-plan, not exit 6."""
    ns = real.new_namespace()
    svc = real.ok(
        "POST",
        f"/api/v1/namespaces/{ns}/services",
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "labels": {"a": "b"}},
         "spec": {"clusterIP": "None", "ports": [{"port": 1}]}},
    )  # fmt: skip
    api = Api(
        load_client(real.write_kubeconfig(tmp_path / "kc"), None, {}), Deadline(10), structlog.get_logger()
    )
    path = f"/api/v1/namespaces/{ns}/services/x"
    remove = {"op": "remove", "path": "/metadata/labels/a"}
    stale = {
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": str(int(svc["metadata"]["resourceVersion"]) - 1),
    }
    with pytest.raises(WriteConflict):
        api.json_patch(path, [stale, remove], dry_run=False)
    current = {"op": "test", "path": "/metadata/resourceVersion", "value": svc["metadata"]["resourceVersion"]}
    assert "a" not in api.json_patch(path, [current, remove], dry_run=False)["metadata"].get("labels", {})


def test_the_endpoints_deprecation_warning_is_logged_once_from_1_33(
    real: RealApiServer, tmp_path: Path
) -> None:
    real.create_nodes(nodes(3))
    ns = real.new_namespace()
    r = reconcile(real, tmp_path, ns)
    assert r.code == 0, r.finished
    warnings = [e["warning"] for e in r.named("api_warning")]
    if server_minor(real.ok("GET", "/version")) >= 33:
        assert warnings == ["v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"]
    else:
        assert warnings == []
    # Without the Endpoints no warning, on either version.
    only_slices = reconcile(real, tmp_path, real.new_namespace(), "--resources", "endpointslices")
    assert only_slices.code == 0 and only_slices.named("api_warning") == []


def test_a_node_outside_the_services_first_family_is_named(real: RealApiServer, tmp_path: Path) -> None:
    real.create_nodes([*nodes(2), make_node("v6-only", "fd00::9")])
    ns = real.new_namespace()
    r = reconcile(real, tmp_path, ns)
    assert r.code == 0, r.finished
    # Whatever families this server gives our Service, the nodes with no address of the first are named.
    families = real.ok("GET", f"/api/v1/namespaces/{ns}/services/kubelet")["spec"]["ipFamilies"]
    unseen = {"IPv4": ["v6-only"], "IPv6": ["n00000", "n00001"]}[families[0]]
    assert [(w["nodes"], w["family"]) for w in r.named("endpointslice_role_misses_nodes")] == [
        (unseen, families[0])
    ]
    assert sorted(published(real, ns)[1]) == sorted(["10.0.0.1", "10.0.0.2", "fd00::9"])


def test_a_slice_of_another_service_with_one_of_our_names_is_never_written(
    real: RealApiServer, tmp_path: Path
) -> None:
    real.create_nodes(nodes(3))
    ns = real.new_namespace()
    body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubelet-ipv4-0",
            "labels": {
                "kubernetes.io/service-name": "other",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.9.0.1"], "conditions": {"ready": True}}],
    }
    real.ok("POST", SLICES.format(ns=ns), body, query={"fieldManager": "endpointslice-controller"})
    before = real.versions(ns)
    for args in (("--dry-run",), ()):
        r = reconcile(real, tmp_path, ns, *args)
        assert r.code == 0, r.finished
        (taken,) = r.named("endpointslice_name_taken")
        assert (taken["name"], taken["service"]) == ("kubelet-ipv4-0", "other")
        after = real.versions(ns)
        assert after["endpointslices/kubelet-ipv4-0"] == before["endpointslices/kubelet-ipv4-0"]
    other = real.ok("GET", SLICES.format(ns=ns) + "/kubelet-ipv4-0")
    assert other["metadata"]["labels"]["kubernetes.io/service-name"] == "other"
    assert [e["addresses"] for e in other["endpoints"]] == [["10.9.0.1"]]
    assert published(real, ns) == (["10.0.0.1", "10.0.0.2", "10.0.0.3"],) * 2
    again = reconcile(real, tmp_path, ns)
    assert again.finished["writes"] == 0 and not again.named("endpointslice_name_taken")


def _helm_service(real: RealApiServer, ns: str, **spec: Any) -> dict[str, Any]:
    """A Service of our name made by another tool's plain create: the server records its
    defaults (type, sessionAffinity, ...) as that tool's fields."""
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubelet",
            "labels": {"app.kubernetes.io/name": "node-exporter", "helm.sh/chart": "node-exporter-4.2"},
            "annotations": {"meta.helm.sh/release-name": "monitoring"},
        },
        "spec": {"ports": [{"name": "metrics", "port": 9100}], "selector": {"app": "node-exporter"}, **spec},
    }
    created: dict[str, Any] = real.ok(
        "POST", f"/api/v1/namespaces/{ns}/services", body, query={"fieldManager": "helm"}
    )
    return created


def test_a_cluster_ip_service_of_our_name_is_exit_6_before_any_write(
    real: RealApiServer, tmp_path: Path
) -> None:
    real.create_nodes(nodes(2))
    ns = real.new_namespace()
    svc = _helm_service(real, ns)
    before = real.versions(ns)
    for args in (("--dry-run",), ("--take-over",)):
        r = reconcile(real, tmp_path, ns, *args)
        assert r.code == 6, r.finished
        assert r.finished["reason"].startswith(
            f"Service {ns}/kubelet belongs to someone else (field managers: helm): its spec.clusterIP is"
            f" {svc['spec']['clusterIP']!r} and may not change"
        ), r.finished["reason"]
        assert r.finished["writes"] == 0 and real.versions(ns) == before


def test_another_tools_headless_service_is_warned_about_then_taken_over_then_left_alone(
    real: RealApiServer, tmp_path: Path
) -> None:
    real.create_nodes(nodes(2))
    ns = real.new_namespace()
    _helm_service(real, ns, clusterIP="None")
    plain = reconcile(real, tmp_path, ns)
    assert plain.code == 0, plain.finished
    (warning,) = [w for w in plain.named("foreign_fields") if w["kind"] == "Service"]
    assert warning["managers"] == ["helm"]
    # The fields the server defaulted (type, sessionAffinity ...) are helm's too, but never foreign.
    assert warning["fields"] == [
        "metadata.annotations[meta.helm.sh/release-name]",
        "metadata.labels[helm.sh/chart]",
        'spec.ports[{"port":9100,"protocol":"TCP"}]',
        "spec.selector",
    ]
    taken = reconcile(real, tmp_path, ns, "--take-over")
    assert taken.code == 0, taken.finished
    svc = real.ok("GET", f"/api/v1/namespaces/{ns}/services/kubelet")
    assert "selector" not in svc["spec"] and [p["port"] for p in svc["spec"]["ports"]] == [10250, 4194]
    assert "helm.sh/chart" not in svc["metadata"]["labels"] and not svc["metadata"].get("annotations")
    before = real.versions(ns)
    for args in ((), ("--take-over",)):
        after = reconcile(real, tmp_path, ns, *args)
        assert after.code == 0 and after.finished["writes"] == 0, after.finished
        assert not after.named("foreign_fields")
    assert real.versions(ns) == before
