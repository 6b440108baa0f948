"""deploy/servicemonitor.yaml: well-formed, and it scrapes the Service the reconciler publishes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from lib import desired
from lib.config import Config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def _docs(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as src:
        return [doc for doc in yaml.safe_load_all(src) if doc]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


SERVICE_MONITOR = _one(_docs(DEPLOY / "servicemonitor.yaml"), "ServiceMonitor")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


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
