"""Least privilege, proven on a real kube-apiserver.

The ServiceAccount, ClusterRole, Role and bindings of ``cronjob.yaml`` are
created on the real server (with OwnerReferencesPermissionEnforcement on, as
OpenShift has it), a token is minted for the ServiceAccount by TokenRequest,
and the reconciler runs with it through every path a deployment takes: a dry
run from nothing, the first run, a re-run, a slice emptied and deleted,
``--take-over`` of another manager's objects, and the empty-set guard.

Sufficient: with the Role as written, every path ends with its documented
code and no request is refused. Necessary: with any one (verb, resource) of
it taken away, some path ends in exit 5. So the set of permissions the runs
use is exactly the set the Role grants.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lib.exitcodes import ExitCode
from tests.fakeapi import make_node
from tests.realserver import RealApiServer
from tests.runs import run_main

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]
DOCS = {
    (d["kind"], d["metadata"]["name"]): d
    for d in yaml.safe_load_all((ROOT / "cronjob.yaml").read_text())
    if d
}
SA = DOCS[("ServiceAccount", "kubelet-endpoints-reconciler")]
CLUSTER_ROLE = DOCS[("ClusterRole", "kubelet-endpoints-reconciler")]
ROLE = DOCS[("Role", "kubelet-endpoints-reconciler")]
AUDIENCE = "https://kubernetes.default.svc.cluster.local"
#: What every path must end with, in order (see _paths).
EXPECTED = [0, 0, 0, 0, 0, int(ExitCode.SAFETY_GUARD)]


def grants() -> list[tuple[str, str, str]]:
    """Every (kind, resource, verb) the two roles grant."""
    out = []
    for kind, role in (("ClusterRole", CLUSTER_ROLE), ("Role", ROLE)):
        for rule in role["rules"]:
            out.extend((kind, resource, verb) for resource in rule["resources"] for verb in rule["verbs"])
    return out


def _without(role: dict[str, Any], resource: str, verb: str) -> dict[str, Any]:
    role = copy.deepcopy(role)
    for rule in role["rules"]:
        if resource in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    role["rules"] = [r for r in role["rules"] if r["verbs"]]
    return role


def _install(real: RealApiServer, ns: str, cluster_role: dict[str, Any], role: dict[str, Any]) -> str:
    """Create the RBAC objects for ``ns`` and return a TokenRequest token of the ServiceAccount."""
    sa_name = SA["metadata"]["name"]
    real.ok("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {**SA, "metadata": {"name": sa_name}})
    subject = [{"kind": "ServiceAccount", "name": sa_name, "namespace": ns}]
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    cr_name = f"ker-{ns}"  # cluster-scoped: one per test namespace
    if cluster_role["rules"]:
        real.ok("POST", f"{rbac}/clusterroles", {**cluster_role, "metadata": {"name": cr_name}})
        real.ok(
            "POST",
            f"{rbac}/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": cr_name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cr_name},
                "subjects": subject,
            },
        )
    real.ok("POST", f"{rbac}/namespaces/{ns}/roles", {**role, "metadata": {"name": "ker", "namespace": ns}})
    real.ok(
        "POST",
        f"{rbac}/namespaces/{ns}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "ker", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ker"},
            "subjects": subject,
        },
    )
    token = real.ok(
        "POST",
        f"/api/v1/namespaces/{ns}/serviceaccounts/{sa_name}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": [AUDIENCE]}},
    )["status"]["token"]
    _wait_for_rbac(real, ns, token, role["rules"][-1])
    return str(token)


def _wait_for_rbac(real: RealApiServer, ns: str, token: str, rule: dict[str, Any]) -> None:
    """The authorizer's cache follows new bindings within moments: wait until ``rule`` is in force."""
    group, resource, verb = rule["apiGroups"][0], rule["resources"][0], rule["verbs"][0]
    end = time.monotonic() + 10
    while time.monotonic() < end:
        review = real.ok(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {
                    "resourceAttributes": {
                        "namespace": ns,
                        "verb": verb,
                        "group": group,
                        "resource": resource,
                    }
                },
            },
            token=token,
        )
        if review["status"].get("allowed"):
            return
        time.sleep(0.1)


def _paths(real: RealApiServer, tmp_path: Path, ns: str, token: str) -> list[int]:
    """Every path a deployment takes, in order; the exit code of each."""
    kubeconfig = real.write_kubeconfig(tmp_path / f"kubeconfig-{ns}", token=token)

    def run(*args: str) -> int:
        argv = [
            "--kubeconfig",
            kubeconfig,
            "--namespace",
            ns,
            "--termination-log",
            "",
            "--timeout",
            "20",
            *args,
        ]
        return run_main([*argv, "--max-endpoints-per-slice", "1"], {"HOME": str(tmp_path)}).code

    real.delete_all_nodes()
    real.create_nodes([make_node("rbac-a", "10.9.0.1"), make_node("rbac-b", "10.9.0.2")])
    codes = [run("--dry-run"), run(), run()]
    real.ok("DELETE", "/api/v1/nodes/rbac-b")
    codes.append(run())  # slice kubelet-ipv4-1 emptied: deleted
    # Another manager's label on our Endpoints (if a run could make them) and a slice of its own.
    real.request(
        "PATCH",
        f"/api/v1/namespaces/{ns}/endpoints/kubelet",
        {"metadata": {"labels": {"team": "monitoring"}}},
        query={"fieldManager": "prometheus-operator"},
        content_type="application/merge-patch+json",
    )
    real.ok(
        "POST",
        f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "generateName": "kubelet-",
                "labels": {
                    "kubernetes.io/service-name": "kubelet",
                    "endpointslice.kubernetes.io/managed-by": "prometheus-operator",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.9.0.1"]}],
        },
    )
    codes.append(run("--take-over"))
    real.ok(
        "PATCH",
        "/api/v1/nodes/rbac-a/status",
        {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        content_type="application/strategic-merge-patch+json",
    )
    codes.append(run())  # the empty-set guard
    return codes


def test_the_role_as_written_is_enough_for_every_path(real: RealApiServer, tmp_path: Path) -> None:
    ns = real.new_namespace("rbac")
    token = _install(real, ns, CLUSTER_ROLE, ROLE)
    assert _paths(real, tmp_path, ns, token) == EXPECTED
    # The take-over path did its work under these permissions.
    slices = real.ok("GET", f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices")["items"]
    assert [s["metadata"]["name"] for s in slices] == ["kubelet-ipv4-0"]
    assert slices[0]["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True
    ep = real.ok("GET", f"/api/v1/namespaces/{ns}/endpoints/kubelet")
    assert "team" not in ep["metadata"]["labels"]


@pytest.mark.parametrize(("kind", "resource", "verb"), grants(), ids=lambda g: str(g))
def test_every_permission_of_the_role_is_needed(
    real: RealApiServer, tmp_path: Path, kind: str, resource: str, verb: str
) -> None:
    ns = real.new_namespace("rbac")
    cluster_role = _without(CLUSTER_ROLE, resource, verb) if kind == "ClusterRole" else CLUSTER_ROLE
    role = _without(ROLE, resource, verb) if kind == "Role" else ROLE
    token = _install(real, ns, cluster_role, role)
    codes = _paths(real, tmp_path, ns, token)
    assert int(ExitCode.FORBIDDEN) in codes, f"without {verb} {resource} every path still passed: {codes}"
    assert set(codes) <= {*EXPECTED, int(ExitCode.FORBIDDEN)}, codes
