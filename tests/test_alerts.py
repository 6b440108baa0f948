"""deploy/alerts.yaml: well-formed, its PromQL over real kube-state-metrics series, every exit code
covered, every runbook link resolving, and the CronJob settings the alerts depend on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import promql_parser as promql
import pytest
import yaml

from lib.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def _docs(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as src:
        return [doc for doc in yaml.safe_load_all(src) if doc]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


README = (ROOT / "README.md").read_text(encoding="utf-8")
CRONJOB = _one(_docs(ROOT / "cronjob.yaml"), "CronJob")
JOB = CRONJOB["spec"]["jobTemplate"]["spec"]
(CONTAINER,) = JOB["template"]["spec"]["containers"]
ALERTS = _one(_docs(DEPLOY / "alerts.yaml"), "PrometheusRule")
RULES = [rule for group in ALERTS["spec"]["groups"] for rule in group["rules"]]


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


def test_every_alert_links_a_runbook_in_the_readme() -> None:
    anchors = _github_anchors(README)
    for rule in RULES:
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("README.md#"), url
        assert url.split("#", 1)[1] in anchors, f"{rule['alert']}: no README heading for {url}"


def test_the_readme_has_a_runbook_for_every_exit_code() -> None:
    section = README.split("## Alerting and runbooks", 1)[1].split("\n## ", 1)[0]
    for code in ExitCode:
        if code != ExitCode.OK:
            assert re.search(rf"^#+ exit {int(code)}\b", section, re.MULTILINE), (
                f"no runbook for exit {int(code)}"
            )


def test_the_cronjob_keeps_failed_jobs_as_the_alerts_expect() -> None:
    # The API-unavailable alert counts three failed Jobs.
    assert CRONJOB["spec"]["failedJobsHistoryLimit"] == 3
    assert JOB["ttlSecondsAfterFinished"] >= 900  # kept for the alerts' 15-minute window
