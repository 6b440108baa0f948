"""The Helm chart: lint clean, its default render is cronjob.yaml, and its values reach the program.

The plain manifests are rendered from the chart (``make manifests``); these
tests fail when one is stale. Product values are checked through the real
flag parser: the container's environment of a render is parsed by
``lib.config.parse`` into the Config a pod would run with.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lib import config
from tests import k8stools
from tests.tools import manifests

ROOT = Path(__file__).resolve().parent.parent
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
