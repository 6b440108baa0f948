"""deploy/ as a kustomize base: it renders what the plain files hold, and a real server takes it.

``kubectl kustomize`` (tests/k8stools.py finds it) renders the base and each
component; the objects the real kube-apiserver knows (not the CRD kinds) are
then created on it with a server-side dry run, in a namespace of the test's
own set by a kustomize overlay, as a user would. The tier is reviewed on
v1.24 and v1.35. v1.24 does not know ``podFailurePolicy`` and drops it
silently (even with ``fieldValidation=Strict``: alpha and off there), so the
base loses its exit code routing on such a server, while the pre-1.26 variant
is stored exactly as written; from v1.26 (beta, on by default) the base is
kept whole too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import k8stools
from tests.realserver import RealApiServer

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
#: From this minor version on the API server keeps a Job's ``podFailurePolicy``.
POD_FAILURE_POLICY_MINOR = 26
POD_FAILURE_POLICY = ".spec.jobTemplate.spec.podFailurePolicy"

#: Where a kind is created on the API server (namespaced kinds take {ns}).
PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "CronJob": "/apis/batch/v1/namespaces/{ns}/cronjobs",
}


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kustomize(tmp_path: Path, *, components: tuple[str, ...] = (), namespace: str | None = None) -> list[Any]:
    """``kubectl kustomize`` of an overlay over deploy/ with ``components``, as a user writes one."""
    kubectl = k8stools.require("kubectl")
    overlay = tmp_path / "overlay"
    overlay.mkdir(exist_ok=True)
    # kustomize wants relative paths; the overlay sits in a temporary folder.
    rel = Path("../" * len(overlay.parts[1:])) / DEPLOY.relative_to("/")
    kustomization: dict[str, Any] = {
        "resources": [str(rel)],
        "components": [str(rel / c) for c in components],
    }
    if namespace:
        kustomization["namespace"] = namespace
    extra = overlay / "runbook-base-url.yaml"
    if "components/runbook-base-url" in components:
        extra.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": "runbook-base-url",
                        "annotations": {"config.kubernetes.io/local-config": "true"},
                    },
                    "data": {"url": "https://wiki.example.com/runbooks"},
                }
            )
        )
        kustomization["resources"].append(extra.name)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    done = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def test_the_base_renders_the_plain_files_object_by_object(tmp_path: Path) -> None:
    rendered = {_key(doc): doc for doc in kustomize(tmp_path)}
    plain = [
        *_load(ROOT / "cronjob.yaml"),
        *_load(DEPLOY / "servicemonitor.yaml"),
        *_load(DEPLOY / "alerts.yaml"),
    ]
    assert rendered == {_key(doc): doc for doc in plain}


def test_the_pre_1_26_component_removes_the_pod_failure_policy_and_nothing_else(tmp_path: Path) -> None:
    base = {_key(doc): doc for doc in kustomize(tmp_path)}
    old = {_key(doc): doc for doc in kustomize(tmp_path, components=("components/pre-1.26",))}
    cronjob = ("CronJob", "kubelet-endpoints-reconciler")
    assert "podFailurePolicy" in base[cronjob]["spec"]["jobTemplate"]["spec"]
    del base[cronjob]["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]
    assert old == base


def test_the_runbook_component_moves_every_runbook_url_and_keeps_its_anchor(tmp_path: Path) -> None:
    base = {_key(doc): doc for doc in kustomize(tmp_path)}
    moved = {_key(doc): doc for doc in kustomize(tmp_path, components=("components/runbook-base-url",))}
    assert "ConfigMap" not in {kind for kind, _ in moved}  # local-config: never applied
    rule_key = ("PrometheusRule", "kubelet-endpoints-reconciler")
    before = [r for g in base[rule_key]["spec"]["groups"] for r in g["rules"]]
    after = [r for g in moved[rule_key]["spec"]["groups"] for r in g["rules"]]
    assert len(before) == len(after) > 0
    for old, new in zip(before, after, strict=True):
        if "alert" not in old:  # a recording rule: no annotations, none made
            assert new == old
            continue
        anchor = old["annotations"]["runbook_url"].split("#", 1)[1]
        assert new["annotations"]["runbook_url"] == f"https://wiki.example.com/runbooks#{anchor}"


def test_the_servicemonitor_can_be_left_out(tmp_path: Path) -> None:
    kinds = [doc["kind"] for doc in kustomize(tmp_path, components=("components/without-servicemonitor",))]
    assert "ServiceMonitor" not in kinds and "PrometheusRule" in kinds and "CronJob" in kinds


def _missing(sent: Any, stored: Any, path: str = "") -> list[str]:
    """Paths of ``sent`` that ``stored`` does not hold (server defaults may add, never remove)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [path]
        return [
            p
            for k, v in sent.items()
            for p in (_missing(v, stored[k], f"{path}.{k}") if k in stored else [f"{path}.{k}"])
        ]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(sent) != len(stored):
            return [path]
        return [
            p
            for i, (a, b) in enumerate(zip(sent, stored, strict=True))
            for p in _missing(a, b, f"{path}[{i}]")
        ]
    return [] if sent == stored else [path]


def _create_dry_run(real: RealApiServer, docs: list[dict[str, Any]], ns: str) -> dict[str, list[str]]:
    """Create every non-CRD object with a server-side dry run; per kind, what the server dropped."""
    dropped: dict[str, list[str]] = {}
    kinds = {doc["kind"] for doc in docs if doc["kind"] not in CRD_KINDS}
    assert kinds == set(PATHS), kinds
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        reply = real.request(
            "POST",
            PATHS[doc["kind"]].format(ns=ns),
            doc,
            query={"dryRun": "All", "fieldValidation": "Strict"},
        )
        assert reply.status == 201, f"{doc['kind']}: {reply.status} {reply.body}"
        dropped[doc["kind"]] = _missing(doc, reply.body)
    return dropped


@pytest.mark.real
@pytest.mark.parametrize("variant", ["base", "pre-1.26"])
def test_the_real_server_accepts_every_object_it_knows(
    real: RealApiServer, tmp_path: Path, variant: str
) -> None:
    ns = real.new_namespace("kustomize")
    components = ("components/pre-1.26",) if variant == "pre-1.26" else ()
    docs = kustomize(tmp_path, components=components, namespace=ns)
    assert {doc["metadata"].get("namespace", ns) for doc in docs} == {ns}
    dropped = _create_dry_run(real, docs, ns)
    # Nothing persisted: a dry run.
    assert real.get(f"/apis/batch/v1/namespaces/{ns}/cronjobs/kubelet-endpoints-reconciler").status == 404
    if variant == "base":
        # v1.24 stores the CronJob without its pod failure policy: accepted,
        # but exit codes would not be routed. Hence the pre-1.26 variant.
        assert dropped.pop("CronJob") == _dropped_pod_failure_policy(real)
    assert all(not paths for paths in dropped.values()), dropped


def _dropped_pod_failure_policy(real: RealApiServer) -> list[str]:
    """What this server drops of a CronJob with a pod failure policy: that, before v1.26; else nothing."""
    return [POD_FAILURE_POLICY] if real.minor() < POD_FAILURE_POLICY_MINOR else []


@pytest.mark.real
def test_the_plain_cronjob_yaml_is_accepted_as_well(real: RealApiServer) -> None:
    # cronjob.yaml as `kubectl apply -f` takes it, in kube-system.
    docs = _load(ROOT / "cronjob.yaml")
    dropped = _create_dry_run(real, docs, "kube-system")
    assert dropped.pop("CronJob") == _dropped_pod_failure_policy(real)
    assert all(not paths for paths in dropped.values()), dropped
