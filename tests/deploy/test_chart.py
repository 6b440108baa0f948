"""The Helm chart: lint clean, its default render is cronjob.yaml, its values checked and run.

The plain manifests are rendered from the chart (``make manifests``); these
tests fail when one is stale. Product values are checked through the real
flag parser: the container's environment of a render is parsed by
``lib.config.parse`` into the Config a pod would run with. Every bad value of
a table is refused by ``values.schema.json`` (or a template check) naming it,
and the program refuses each as well; every object carries the standard
labels; NOTES.txt and the ``helm test`` hook render as documented, and the
real server stores the hook's Job as written.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lib import config
from tests import k8stools
from tests.realserver import RealApiServer
from tools import manifests

ROOT = Path(__file__).resolve().parents[2]
CHART = manifests.CHART


@pytest.fixture(scope="module")
def helm() -> str:
    return k8stools.require("helm")


def _render(helm: str, *args: str, namespace: str = "kube-system") -> dict[str, dict[str, Any]]:
    text = manifests.helm_template(helm, *args, namespace=namespace)
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text) if doc}


def test_the_chart_copies_of_the_deploy_files_are_current() -> None:
    # No helm needed: the PrometheusRule's rule groups come from deploy/alerts.yaml verbatim.
    for name in ("alerts.yaml", "servicemonitor.yaml"):
        assert (CHART / "files" / name).read_bytes() == (ROOT / "deploy" / name).read_bytes(), (
            f"charts/.../files/{name} is stale: run make manifests"
        )


def test_cronjob_yaml_and_deploy_copy_are_identical() -> None:
    assert (ROOT / "cronjob.yaml").read_bytes() == (ROOT / "deploy" / "cronjob.yaml").read_bytes()


def test_the_rendered_manifests_are_current(helm: str) -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, text in manifests.rendered(helm).items()
        if path.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"stale, run make manifests: {stale}"


def test_helm_lint(helm: str) -> None:
    for args in ([], ["--set", "serviceMonitor.enabled=true,prometheusRule.enabled=true"]):
        done = subprocess.run(
            [helm, "lint", "--strict", str(CHART), *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_monitoring_objects_are_off_by_default_and_carry_extra_labels_when_on(helm: str) -> None:
    assert not {"ServiceMonitor", "PrometheusRule"} & set(_render(helm))
    on = _render(
        helm,
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,"
        "serviceMonitor.labels.release=kps,prometheusRule.labels.release=kps",
        "--set",
        "runbookBaseUrl=https://wiki.example.com/runbooks",
        namespace="monitoring",
    )
    rule = on["PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert on["ServiceMonitor"]["metadata"]["labels"]["release"] == "kps"
    assert on["ServiceMonitor"]["spec"]["namespaceSelector"] == {"matchNames": ["monitoring"]}
    # The rule groups are deploy/alerts.yaml's but for the namespace and the runbook base.
    source = (
        (ROOT / "deploy" / "alerts.yaml")
        .read_text()
        .replace('namespace="kube-system"', 'namespace="monitoring"')
    )
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]
    assert alerts
    for r in alerts:
        url = r["annotations"]["runbook_url"]
        assert url.startswith("https://wiki.example.com/runbooks#"), url
    expected = yaml.safe_load(source)["spec"]
    for group in expected["groups"]:
        for r in (r for r in group["rules"] if "alert" in r):
            anchor = r["annotations"]["runbook_url"].split("#", 1)[1]
            r["annotations"]["runbook_url"] = f"https://wiki.example.com/runbooks#{anchor}"
    assert rule["spec"] == expected


def test_pod_failure_policy_can_be_turned_off_for_servers_before_1_26(helm: str) -> None:
    on = _render(helm)["CronJob"]
    off = _render(helm, "--set", "podFailurePolicy.enabled=false")["CronJob"]
    del on["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]
    assert off == on


def _pod_config(cronjob: dict[str, Any]) -> config.Config:
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    environ = {v["name"]: v.get("value", cronjob["metadata"]["namespace"]) for v in container["env"]}
    return config.parse(container.get("args", []), environ)


def test_every_product_value_reaches_the_program(helm: str) -> None:
    cronjob = _render(
        helm,
        "--set",
        "reconciler.serviceName=kube-prometheus-stack-kubelet,reconciler.nodeSelector=pool=a,"
        "reconciler.addressType=external,reconciler.httpMetrics=true,reconciler.allowEmpty=true,"
        "reconciler.dryRun=true,reconciler.timeout=30,reconciler.maxEndpointsPerSlice=50,"
        "reconciler.fieldManager=mine,reconciler.logLevel=debug,reconciler.resources=endpointslices",
        namespace="monitoring",
    )["CronJob"]
    got = _pod_config(cronjob)
    assert (got.namespace, got.service_name, got.node_selector, got.address_type) == (
        "monitoring",
        "kube-prometheus-stack-kubelet",
        "pool=a",
        "external",
    )
    assert got.http_metrics and got.allow_empty and got.dry_run
    assert (got.timeout, got.max_endpoints_per_slice, got.field_manager, got.log_level) == (
        30,
        50,
        "mine",
        "debug",
    )
    assert got.resources == ("endpointslices",)


def test_the_default_render_runs_with_the_program_defaults_but_for_the_timeout(helm: str) -> None:
    got = _pod_config(_render(helm)["CronJob"])
    assert got == config.Config(namespace="kube-system", timeout=40.0, log_format="json")


def test_image_schedule_resources_and_history_values(helm: str) -> None:
    cronjob = _render(
        helm,
        "--set",
        "image.repository=registry.example.com/ker,image.tag=1.2.3,schedule=*/2 * * * *,"
        "successfulJobsHistoryLimit=2,failedJobsHistoryLimit=5,ttlSecondsAfterFinished=600,"
        "resources.limits.memory=512Mi",
    )["CronJob"]
    spec = cronjob["spec"]
    (container,) = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/ker:1.2.3"
    assert (spec["schedule"], spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (
        "*/2 * * * *",
        2,
        5,
    )
    assert spec["jobTemplate"]["spec"]["ttlSecondsAfterFinished"] == 600
    assert container["resources"]["limits"]["memory"] == "512Mi"


# --- values: the schema refuses what the program would ------------------------------

VALUES = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
# A --set of one of the chart's values, as the docs write it (not another chart's).
README_INSTALL = re.compile(r"helm install (?:[^\n]*\\\n)*[^\n]*")  # with its continuation lines
DOCUMENTED_SET = re.compile(r"--set ([A-Za-z.\[\]0-9]+=[^\s`\\]+)")


def _helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def _template(
    helm: str, *args: str, release: str = "kubelet-endpoints-reconciler", namespace: str = "kube-system"
) -> subprocess.CompletedProcess[str]:
    return _helm(helm, "template", release, str(CHART), "--namespace", namespace, *args)


def _documented_sets() -> list[str]:
    found = []
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        for value in DOCUMENTED_SET.findall(doc.read_text(encoding="utf-8")):
            if value.split(".", 1)[0].split("=", 1)[0] in VALUES:
                found.append(value)
    return found


def test_every_documented_example_renders_and_runs(helm: str) -> None:
    sets = _documented_sets()
    # The README's install command, the pre-1.26 switch, the migration's two.
    assert len(sets) >= 8, sets
    for value in sets:
        done = _template(helm, "--set", value)
        assert done.returncode == 0, f"--set {value}: {done.stderr}"
        (cronjob,) = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "CronJob"]
        _pod_config(cronjob)  # the program takes what the chart renders
    # The README's command as a whole.
    readme = README_INSTALL.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert readme is not None
    whole = [arg for value in DOCUMENTED_SET.findall(readme[0]) for arg in ("--set", value)]
    assert len(whole) >= 8 and _template(helm, *whole).returncode == 0


#: (--set value, what helm's refusal must name). Each is a value the program
#: refuses as well (checked below where it has the flag) or a misspelling.
BAD_VALUES = [
    ("serviceMonitor.enable=true", "serviceMonitor: Additional property enable is not allowed"),
    ("prometheusRules.enabled=true", "Additional property prometheusRules is not allowed"),
    ("reconciler.timout=30", "reconciler: Additional property timout is not allowed"),
    ("resources.limits.memroy=1Gi", "resources.limits: Additional property memroy is not allowed"),
    ("reconciler.extraEnv[0].name=KUBELET_ENDPOINTS_TIMEOUTS", "reconciler.extraEnv.0.name"),
    ("schedule=garbage", "schedule: Does not match pattern"),
    ("schedule=* * * *", "schedule: Does not match pattern"),
    ("schedule=* * * * * *", "schedule: Does not match pattern"),
    ("reconciler.timeout=abc", "reconciler.timeout: Does not match pattern"),
    ("reconciler.timeout=0", "reconciler.timeout: Must be greater than or equal to"),
    ("reconciler.timeout=-5", "reconciler.timeout: Must be greater than or equal to"),
    ("reconciler.timeout=3601", "reconciler.timeout: Must be less than or equal to 3600"),
    # --set makes a decimal a string: its bounds are the template's to check.
    ("reconciler.timeout=0.0", "reconciler.timeout 0.0: must be more than 0 and at most 3600"),
    ("reconciler.timeout=3600.5", "reconciler.timeout 3600.5: must be more than 0 and at most 3600"),
    ("reconciler.serviceName=1kubelet", "reconciler.serviceName: Does not match pattern"),
    ("reconciler.serviceName=Kubelet", "reconciler.serviceName: Does not match pattern"),
    ("reconciler.serviceName=kube.let", "reconciler.serviceName: Does not match pattern"),
    ("reconciler.serviceName=kubelet-", "reconciler.serviceName: Does not match pattern"),
    (
        "reconciler.serviceName=" + "k" * 54,
        "reconciler.serviceName: String length must be less than or equal to 53",
    ),
    ("reconciler.resources=endpoint", "reconciler.resources: Does not match pattern"),
    ("reconciler.resources=services\\,endpoints", "reconciler.resources: Does not match pattern"),
    (
        "reconciler.maxEndpointsPerSlice=0",
        "reconciler.maxEndpointsPerSlice: Must be greater than or equal to 1",
    ),
    (
        "reconciler.maxEndpointsPerSlice=1001",
        "reconciler.maxEndpointsPerSlice: Must be less than or equal to 1000",
    ),
    ("reconciler.maxEndpointsPerSlice=many", "reconciler.maxEndpointsPerSlice"),
    ("reconciler.addressType=hostname", "reconciler.addressType: reconciler.addressType must be one of"),
    ("reconciler.logFormat=text", "reconciler.logFormat: reconciler.logFormat must be one of"),
    ("reconciler.logLevel=verbose", "reconciler.logLevel: reconciler.logLevel must be one of"),
    ("reconciler.fieldManager=-mine", "reconciler.fieldManager: Does not match pattern"),
    (
        "reconciler.fieldManager=" + "m" * 64,
        "reconciler.fieldManager: String length must be less than or equal to 63",
    ),
    ("reconciler.dryRun=yes", "reconciler.dryRun: Invalid type. Expected: boolean"),
    ("resources.limits.memory=lots", "resources.limits.memory: Does not match pattern"),
    ("resources.requests.cpu=-1", "resources.requests.cpu"),
    ("image.pullPolicy=always", "image.pullPolicy: image.pullPolicy must be one of"),
    ("image.repository=", "image.repository: String length must be greater than or equal to 1"),
    ("failedJobsHistoryLimit=1", "failedJobsHistoryLimit: Must be greater than or equal to 2"),
    ("activeDeadlineSeconds=0", "activeDeadlineSeconds: Must be greater than or equal to 1"),
    ("ttlSecondsAfterFinished=-1", "ttlSecondsAfterFinished: Must be greater than or equal to 0"),
    ("podFailurePolicy.enabled=maybe", "podFailurePolicy.enabled: Invalid type"),
    (
        "serviceMonitor.labels.release=kube prometheus",
        "serviceMonitor.labels.release: Does not match pattern",
    ),
    ("runbookBaseUrl=wiki/runbooks", "runbookBaseUrl: Does not match pattern"),
    # Two values the schema cannot relate: the template refuses the pair.
    ("activeDeadlineSeconds=40", "activeDeadlineSeconds 40 must be more than reconciler.timeout 40"),
]


@pytest.mark.parametrize(("value", "named"), BAD_VALUES, ids=[v for v, _ in BAD_VALUES])
def test_a_bad_or_misspelt_value_is_refused_naming_it(helm: str, value: str, named: str) -> None:
    done = _template(helm, "--set", value)
    assert done.returncode != 0 and not done.stdout, done.stdout
    assert named in done.stderr, done.stderr


#: Product values (reconciler.<key>) the program refuses: the chart must too.
#: The flag's own check is the reference (lib.config.parse, on the same text).
REFUSED_BY_THE_PROGRAM = [
    (key, value.replace("\\,", ","))
    for setting, _ in BAD_VALUES
    if setting.startswith("reconciler.") and "[" not in setting
    for key, value in [setting.removeprefix("reconciler.").split("=", 1)]
    # A boolean's text reaches the program only as its variable, where "yes"
    # is true: the chart takes true/false only and renders "true" itself.
    if key in VALUES["reconciler"] and not isinstance(VALUES["reconciler"][key], bool)
]
#: Where the chart is stricter on purpose: a Service name is a DNS-1035 label
#: (the API server refuses "1kubelet" as a Service name).
STRICTER = {("serviceName", "1kubelet")}
#: Boundaries the program takes: the chart takes them too, and renders them so
#: that the program runs with them.
TAKEN = [
    "reconciler.timeout=3600,activeDeadlineSeconds=3610",
    "reconciler.timeout=0.5",
    "reconciler.timeout=0.0001",
    "reconciler.serviceName=" + "k" * 53,
    "reconciler.serviceName=a",
    "reconciler.serviceName=kube-prometheus-stack-kubelet",
    "reconciler.maxEndpointsPerSlice=1",
    "reconciler.maxEndpointsPerSlice=1000",
    "reconciler.fieldManager=" + "m" * 63,
    "reconciler.fieldManager=My_field.manager-1",
    "reconciler.resources=endpointslices\\,endpoints",
    "reconciler.resources= endpoints \\,\\,endpoints",
    "reconciler.addressType=external",
    "reconciler.logFormat=console",
    "reconciler.logLevel=error",
]


def _flag(key: str) -> str:
    return "--" + re.sub(r"([A-Z])", lambda m: "-" + m[1].lower(), key)


def test_the_schema_is_no_looser_than_the_program(helm: str) -> None:
    assert len(REFUSED_BY_THE_PROGRAM) >= 15, REFUSED_BY_THE_PROGRAM
    for key, value in REFUSED_BY_THE_PROGRAM:
        if (key, value) in STRICTER:
            continue
        with pytest.raises(config.UsageError):
            config.parse([f"{_flag(key)}={value}"], {})
    for setting in TAKEN:
        done = _template(helm, "--set", setting)
        assert done.returncode == 0, f"--set {setting}: {done.stderr}"
        (cronjob,) = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "CronJob"]
        _pod_config(cronjob)  # and the program runs with the rendered text


def test_helm_lint_refuses_a_misspelt_value(helm: str) -> None:
    done = _helm(helm, "lint", "--strict", str(CHART), "--set", "serviceMonitor.enable=true")
    assert done.returncode != 0
    assert "serviceMonitor: Additional property enable is not allowed" in done.stdout + done.stderr


# --- labels, names, NOTES and the helm test hook ------------------------------------

STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
#: What a pod template carries: the labels that never change on upgrade.
SELECTOR_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
)
EVERYTHING_ON = ("--set", "serviceMonitor.enabled=true,prometheusRule.enabled=true")


def _docs_by_template(
    helm: str, *args: str, release: str = "rel", namespace: str = "kube-system"
) -> list[tuple[str, dict[str, Any]]]:
    done = _template(helm, *args, release=release, namespace=namespace)
    assert done.returncode == 0, done.stderr
    out = []
    for text in done.stdout.split("\n---\n"):
        source = re.search(r"^# Source: [^/]+/(.+)$", text, re.MULTILINE)
        doc = yaml.safe_load(text)
        if doc:
            assert source, text[:200]
            out.append((source[1], doc))
    return out


def _pod_templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]]
    if doc["kind"] == "Job":
        return [doc["spec"]["template"]]
    return []


def test_every_object_of_every_template_carries_the_standard_labels(helm: str) -> None:
    docs = _docs_by_template(helm, *EVERYTHING_ON)
    templates = {p.relative_to(CHART).as_posix() for p in (CHART / "templates").rglob("*.yaml")}
    assert {source for source, _ in docs} == templates  # every template, both optional objects
    assert {"ServiceMonitor", "PrometheusRule", "Job", "CronJob"} <= {doc["kind"] for _, doc in docs}
    expected = {
        "app.kubernetes.io/name": "kubelet-endpoints-reconciler",
        "app.kubernetes.io/instance": "rel",
        "app.kubernetes.io/version": yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"],
        "app.kubernetes.io/component": "reconciler",
        "app.kubernetes.io/part-of": "kubelet-endpoints-reconciler",
        "app.kubernetes.io/managed-by": "Helm",
        "helm.sh/chart": "kubelet-endpoints-reconciler-0.1.0",
    }
    assert set(expected) == set(STANDARD_LABELS)
    for source, doc in docs:
        labels = doc["metadata"]["labels"]
        assert {k: labels.get(k) for k in STANDARD_LABELS} == expected, (source, doc["kind"])
        if doc["kind"] == "CronJob":  # the Jobs it creates
            job_labels = doc["spec"]["jobTemplate"]["metadata"]["labels"]
            assert {k: job_labels.get(k) for k in STANDARD_LABELS} == expected
        for template in _pod_templates(doc):
            assert template["metadata"]["labels"] == {k: expected[k] for k in SELECTOR_LABELS}, source


def test_the_plain_manifests_carry_the_labels_but_those_only_helm_makes_true() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "cronjob.yaml").read_text()) if d]
    assert "Job" not in {d["kind"] for d in docs}  # the helm test hook stays in the chart
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert set(labels) == set(STANDARD_LABELS) - {"app.kubernetes.io/managed-by", "helm.sh/chart"}


def test_names_are_fixed_whatever_the_release_so_a_second_release_collides(helm: str) -> None:
    # One reconciler per cluster: a second release must meet the first's
    # objects (and fail on them) rather than run a second CronJob.
    names = {
        release: sorted(
            (doc["kind"], doc["metadata"]["name"])
            for _, doc in _docs_by_template(helm, *EVERYTHING_ON, release=release)
        )
        for release in ("kubelet-endpoints-reconciler", "second")
    }
    assert names["kubelet-endpoints-reconciler"] == names["second"]
    assert ("ClusterRole", "kubelet-endpoints-reconciler") in names[
        "second"
    ]  # cluster-wide: any namespace collides


def _test_job(helm: str, *args: str, release: str = "rel") -> dict[str, Any]:
    (job,) = [doc for _, doc in _docs_by_template(helm, *args, release=release) if doc["kind"] == "Job"]
    return job


def test_the_helm_test_hook_runs_the_program_once_as_a_dry_run_with_the_release_account(helm: str) -> None:
    docs = {
        doc["kind"]: doc for _, doc in _docs_by_template(helm, "--set", "reconciler.serviceName=kps-kubelet")
    }
    job, cronjob = docs["Job"], docs["CronJob"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert (
        job["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    )
    # One pod, no retry: the Job (and helm test) succeeds only on exit 0.
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    pod, scheduled = (
        job["spec"]["template"]["spec"],
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    )
    assert (
        pod["serviceAccountName"]
        == docs["ServiceAccount"]["metadata"]["name"]
        == scheduled["serviceAccountName"]
    )
    # The scheduled run's settings, plus --dry-run: nothing persisted.
    (container,) = pod["containers"]
    assert container["args"] == ["--dry-run"]
    environ = {v["name"]: v.get("value", job["metadata"]["namespace"]) for v in container["env"]}
    tested = config.parse(container["args"], environ)
    assert tested == dataclasses.replace(_pod_config(cronjob), dry_run=True)
    assert tested.service_name == "kps-kubelet"
    del container["args"]
    assert pod == scheduled


def test_helm_lint_passes_with_the_test_hook_and_notes(helm: str) -> None:
    for args in ([], ["--set", "reconciler.dryRun=true,reconciler.resources=endpointslices"]):
        done = _helm(helm, "lint", "--strict", str(CHART), *args)
        assert done.returncode == 0, done.stdout + done.stderr


def _notes(helm: str, tmp_path: Path, *args: str, release: str = "rel", namespace: str = "monitoring") -> str:
    """NOTES.txt as helm install prints it: helm template leaves NOTES out, so a copy
    of the chart renders it as a value of a template (same context, same helpers)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n'
    )
    done = _helm(
        helm,
        "template",
        release,
        str(chart),
        "-n",
        namespace,
        "--show-only",
        "templates/zz-notes.yaml",
        *args,
    )
    assert done.returncode == 0, done.stderr
    notes: str = yaml.safe_load(done.stdout)["notes"]
    return notes


def test_notes_say_what_was_installed_how_to_test_and_watch_it_and_where_migration_is(
    helm: str, tmp_path: Path
) -> None:
    notes = _notes(helm, tmp_path, "--set", "reconciler.serviceName=kps-kubelet,serviceMonitor.enabled=true")
    assert "installed in monitoring: the CronJob\nkubelet-endpoints-reconciler" in notes
    assert "the ServiceMonitor" in notes and "PrometheusRule" not in notes
    assert "helm test rel -n monitoring" in notes
    # The watch commands select the Jobs and pods this release makes.
    selector = "app.kubernetes.io/name=kubelet-endpoints-reconciler,app.kubernetes.io/instance=rel"
    assert f"kubectl -n monitoring get jobs -l {selector} --watch" in notes
    assert f"kubectl -n monitoring logs -l {selector}" in notes
    cronjob = _render(helm, "--set", "reconciler.serviceName=kps-kubelet")["CronJob"]
    wanted = dict(pair.split("=") for pair in selector.split(","))
    wanted["app.kubernetes.io/instance"] = "kubelet-endpoints-reconciler"  # _render's release
    for labels in (
        cronjob["spec"]["jobTemplate"]["metadata"]["labels"],
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
    ):
        assert wanted.items() <= labels.items()
    assert "reconcile_finished" in notes
    assert "docs/migration.md" in notes
    assert (
        "reconciler.py --namespace monitoring --service-name kps-kubelet"
        " --take-over --dry-run --log-format console" in notes
    )
    assert "dryRun is on" not in notes
    assert "dryRun is on" in _notes(helm, tmp_path / "dry", "--set", "reconciler.dryRun=true")


# --- the real server ----------------------------------------------------------------


def _dropped(sent: Any, stored: Any, path: str = "") -> list[str]:
    """Paths of ``sent`` that ``stored`` does not hold (server defaults may add, never remove)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [path]
        return [p for k, v in sent.items() for p in _dropped(v, stored.get(k), f"{path}.{k}")]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(sent) != len(stored):
            return [path]
        return [
            p
            for i, (a, b) in enumerate(zip(sent, stored, strict=True))
            for p in _dropped(a, b, f"{path}[{i}]")
        ]
    return [] if sent == stored else [path]


@pytest.mark.real
def test_the_real_server_accepts_the_helm_test_job_as_written(real: RealApiServer, helm: str) -> None:
    # The same on v1.24 and v1.35: the test Job uses no field newer than
    # v1.24 (no pod failure policy), so neither server drops anything.
    ns = real.new_namespace("chart")
    (job,) = [doc for _, doc in _docs_by_template(helm, namespace=ns) if doc["kind"] == "Job"]
    assert job["metadata"]["namespace"] == ns
    reply = real.request(
        "POST",
        f"/apis/batch/v1/namespaces/{ns}/jobs",
        job,
        query={"dryRun": "All", "fieldValidation": "Strict"},
    )
    assert reply.status == 201, f"{reply.status} {reply.body}"
    assert _dropped(job, reply.body) == []
    # A dry run: nothing persisted.
    assert real.get(f"/apis/batch/v1/namespaces/{ns}/jobs/{job['metadata']['name']}").status == 404


@pytest.mark.real
def test_a_second_release_in_the_cluster_is_refused_by_name_and_the_first_still_upgrades(
    real: RealApiServer, helm: str, tmp_path: Path
) -> None:
    # A real install (kube-apiserver alone: nothing runs the CronJob). The
    # ClusterRole is cluster-wide and fixed-named: uninstalled at the end, as
    # other real-server tests create it in dry runs.
    kubeconfig = real.write_kubeconfig(tmp_path / "kubeconfig")
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        **{f"HELM_{d}_HOME": str(tmp_path / d.lower()) for d in ("CACHE", "CONFIG", "DATA")},
    }
    first, second = real.new_namespace("chart-a"), real.new_namespace("chart-b")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [helm, *args], capture_output=True, text=True, timeout=120, check=False, env=env
        )

    # Helm validates against the server's schema: a server before 1.26 needs
    # the chart's switch for it (README, "Install"), as a user's install would.
    version = real.ok("GET", "/version")
    old = (int(version["major"]), int(version["minor"].rstrip("+"))) < (1, 26)
    values = ["--set", "podFailurePolicy.enabled=false"] if old else []
    done = run("install", "first", str(CHART), "-n", first, *values)
    try:
        assert done.returncode == 0, done.stderr
        done = run("install", "second", str(CHART), "-n", second, *values)
        assert done.returncode != 0
        assert (
            "kubelet-endpoints-reconciler is already installed in this cluster "
            f"(ClusterRole kubelet-endpoints-reconciler, release first in namespace {first})"
        ) in done.stderr, done.stderr
        assert (
            real.get(f"/apis/batch/v1/namespaces/{second}/cronjobs/kubelet-endpoints-reconciler").status
            == 404
        )
        done = run("upgrade", "first", str(CHART), "-n", first, *values, "--set", "reconciler.logLevel=debug")
        assert done.returncode == 0, done.stderr
    finally:
        run("uninstall", "first", "-n", first)
    assert (
        real.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/kubelet-endpoints-reconciler").status == 404
    )
