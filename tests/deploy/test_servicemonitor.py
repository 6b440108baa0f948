"""deploy/servicemonitor.yaml: well-formed, scrapes exactly as kube-prometheus-stack's own kubelet
ServiceMonitor does (chart 88.5.3, rendered in ../shared/reference), and selects the Service the reconciler
publishes and no other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from lib import desired
from lib.config import Config
from tests.deploy.docs import one, reference, yaml_docs

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
#: kube-prometheus-stack 88.5.3's kubelet ServiceMonitor, default values (../shared/reference/README.md).
CHART_VERSION = "88.5.3"
CHART_RENDER = f"kube-prometheus-stack-{CHART_VERSION}-kubelet-servicemonitor.yaml"


SERVICE_MONITOR = one(yaml_docs(DEPLOY / "servicemonitor.yaml"), "ServiceMonitor")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ENDPOINT_KEYS = {
    "port",
    "path",
    "scheme",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "honorTimestamps",
    "trackTimestampsStaleness",
    "bearerTokenFile",
    "authorization",
    "tlsConfig",
    "relabelings",
    "metricRelabelings",
}
_RELABEL_KEYS = {"sourceLabels", "separator", "regex", "targetLabel", "replacement", "action", "modulus"}


@pytest.fixture(scope="module")
def chart() -> dict[str, Any]:
    """The chart's own kubelet ServiceMonitor, as rendered."""
    return one(yaml_docs(reference(CHART_RENDER)), "ServiceMonitor")


def test_the_reference_is_the_chart_render_we_name(chart: dict[str, Any]) -> None:
    labels = chart["metadata"]["labels"]
    assert labels["chart"] == f"kube-prometheus-stack-{CHART_VERSION}"
    assert labels["app.kubernetes.io/version"] == CHART_VERSION


def test_the_service_monitor_is_well_formed() -> None:
    sm = SERVICE_MONITOR
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(sm["spec"]) <= {"attachMetadata", "jobLabel", "namespaceSelector", "selector", "endpoints"}
    for endpoint in sm["spec"]["endpoints"]:
        assert set(endpoint) <= _ENDPOINT_KEYS, endpoint
        assert set(endpoint["tlsConfig"]) <= {"caFile", "insecureSkipVerify", "serverName"}
        for relabel in endpoint.get("relabelings", []) + endpoint.get("metricRelabelings", []):
            assert set(relabel) <= _RELABEL_KEYS, relabel
            assert all(_LABEL_NAME.fullmatch(label) for label in relabel.get("sourceLabels", []))
            re.compile(relabel.get("regex", "(.*)"))


def test_it_scrapes_exactly_as_the_charts_kubelet_service_monitor(chart: dict[str, Any]) -> None:
    ours, theirs = SERVICE_MONITOR["spec"], chart["spec"]
    # Endpoint for endpoint, field for field: paths, intervals, honorTimestamps and
    # trackTimestampsStaleness on cadvisor, TLS, token, relabelings and metricRelabelings.
    assert ours["endpoints"] == theirs["endpoints"]
    assert [e.get("path", "/metrics") for e in ours["endpoints"]] == [
        "/metrics",
        "/metrics/cadvisor",
        "/metrics/probes",
    ]
    (cadvisor,) = [e for e in ours["endpoints"] if e.get("path") == "/metrics/cadvisor"]
    assert cadvisor["honorTimestamps"] is True and cadvisor["trackTimestampsStaleness"] is True
    assert ours["jobLabel"] == theirs["jobLabel"] == "k8s-app"
    assert ours["attachMetadata"] == theirs["attachMetadata"]
    assert ours["namespaceSelector"] == theirs["namespaceSelector"]
    # The selector: the chart's labels, and ours, so a leftover operator Service is not scraped too.
    assert theirs["selector"]["matchLabels"].items() < ours["selector"]["matchLabels"].items()
    assert set(ours["selector"]) == {"matchLabels"}


def test_it_selects_the_published_kubelet_service_and_no_other() -> None:
    cfg = Config()
    service = desired.service(cfg)
    spec = SERVICE_MONITOR["spec"]
    labels = service["metadata"]["labels"]
    assert cfg.namespace in spec["namespaceSelector"]["matchNames"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert labels[spec["jobLabel"]] == "kubelet"  # job="kubelet", as the chart's rules expect
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in spec["endpoints"]} <= port_names
    # prometheus-operator's kubelet controller labels its Service k8s-app and
    # app.kubernetes.io/name kubelet too, and managed-by prometheus-operator.
    operator = {
        "k8s-app": "kubelet",
        "app.kubernetes.io/name": "kubelet",
        "app.kubernetes.io/managed-by": "prometheus-operator",
    }
    assert not spec["selector"]["matchLabels"].items() <= operator.items()
