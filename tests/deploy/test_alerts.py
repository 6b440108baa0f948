"""deploy/alerts.yaml: well-formed, its PromQL over real kube-state-metrics series, every exit code
covered, every runbook link resolving, the CronJob settings the alerts depend on, and what
fires when, proven by ``promtool test rules`` over series shaped as kube-state-metrics emits them
for the CronJob of cronjob.yaml (tests/deploy/ksm.py), with kube-prometheus-stack's KubeJobFailed
evaluated beside our rules.

promtool comes from Debian's ``prometheus`` package (``.ci/run`` installs it). Missing on a
developer's machine, the promtool tier is skipped with one line saying so; in CI (``CI=true``)
it fails instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import promql_parser as promql
import pytest
import yaml

from lib.exitcodes import ExitCode
from tests.deploy import ksm
from tests.deploy.docs import github_anchors, one, reference, yaml_docs

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
#: Where runbook_url points; every link must name a heading of docs/operations.md (the README's
#: "Alerting and runbooks" section until that file exists).
#: The published repository: the Helm chart's default runbookBaseUrl without its docs/operations.md.
RUNBOOK_BASE = yaml.safe_load((ROOT / "charts" / "kubelet-endpoints-reconciler" / "values.yaml").read_text())[
    "runbookBaseUrl"
].removesuffix("docs/operations.md")
OPERATIONS = ROOT / "docs" / "operations.md"
PREFIX = "KubeletEndpointsReconciler"


CRONJOB = one(yaml_docs(ROOT / "cronjob.yaml"), "CronJob")
JOB = CRONJOB["spec"]["jobTemplate"]["spec"]
(CONTAINER,) = JOB["template"]["spec"]["containers"]
ALERTS = one(yaml_docs(DEPLOY / "alerts.yaml"), "PrometheusRule")
ALL_RULES = [rule for group in ALERTS["spec"]["groups"] for rule in group["rules"]]
RULES = [rule for rule in ALL_RULES if "alert" in rule]
RECORDS = [rule for rule in ALL_RULES if "record" in rule]
BY_NAME = {rule["alert"]: rule for rule in RULES}
JOB_SPEC = ksm.CronJobSpec.from_manifest((ROOT / "cronjob.yaml").read_text(encoding="utf-8"))


# --- structure and PromQL -------------------------------------------------------------

#: kube-state-metrics (2.9+) series the rules may use, with their labels
#: (kube-state-metrics docs/metrics/workload/{cronjob,job,pod}-metrics.md).
KSM_SERIES: dict[str, frozenset[str]] = {
    "kube_cronjob_created": frozenset({"namespace", "cronjob"}),
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
_RECORD_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_ALERT_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


def _labels(expr: Any, known: dict[str, frozenset[str]]) -> frozenset[str] | None:
    """The labels every series of ``expr``'s result carries (None: a scalar); asserts on unknowns."""
    if isinstance(expr, promql.VectorSelector):
        assert expr.name in known, f"not a kube-state-metrics series or record we know: {expr.name}"
        labels = known[expr.name]
        for matcher in expr.matchers.matchers:
            assert matcher.name in labels, f"{expr.name} has no label {matcher.name}"
        return labels
    if isinstance(expr, promql.ParenExpr | promql.UnaryExpr):
        return _labels(expr.expr, known)
    if isinstance(expr, promql.NumberLiteral | promql.StringLiteral):
        return None
    if isinstance(expr, promql.Call):
        name = expr.func.name
        if name == "time":
            return None
        if name in ("absent", "absent_over_time"):
            (arg,) = expr.args
            selector = arg.vector_selector if isinstance(arg, promql.MatrixSelector) else arg
            _labels(selector, known)
            # absent() keeps the labels of its equality matchers.
            return frozenset(m.name for m in selector.matchers.matchers if str(m.op) == "MatchOp.Equal")
        if name == "label_replace":
            inner = _labels(expr.args[0], known)
            assert inner is not None
            dst, _, src, regex = (arg.val for arg in expr.args[1:])
            assert _LABEL_NAME.fullmatch(dst) and (src == "" or src in inner), (dst, src)
            re.compile(regex)
            return inner | {dst}
        raise AssertionError(f"unexpected function {name}")
    if isinstance(expr, promql.AggregateExpr):
        inner = _labels(expr.expr, known)
        assert inner is not None
        modifier = expr.modifier
        if modifier is None:
            return frozenset()
        assert set(modifier.labels) <= inner, f"{modifier.labels} not all in {sorted(inner)}"
        if modifier.type == promql.AggModifierType.By:
            return frozenset(modifier.labels)
        return inner - set(modifier.labels)
    if isinstance(expr, promql.BinaryExpr):
        lhs, rhs = _labels(expr.lhs, known), _labels(expr.rhs, known)
        if lhs is None or rhs is None:
            return lhs if rhs is None else rhs
        modifier = expr.modifier
        matching = modifier.matching if modifier else None
        if matching is not None and matching.type == promql.LabelModifierType.Include:
            assert set(matching.labels) <= lhs & rhs, f"on({matching.labels}) not on both sides"
        group = set(modifier.group_labels or ()) if modifier else set()
        assert group <= rhs, f"group_left({sorted(group)}) not on the right: {sorted(rhs)}"
        # and/unless keep the left side's series; or takes series from both.
        return lhs & rhs if str(expr.op) == "or" else lhs | group
    raise AssertionError(f"unexpected PromQL node {type(expr).__name__}")


def _known_series() -> dict[str, frozenset[str]]:
    """kube-state-metrics' series and, in rule order, the records (a record only reads earlier ones)."""
    known = dict(KSM_SERIES)
    for record in RECORDS:
        labels = _labels(promql.parse(record["expr"]), known)
        assert labels is not None, record["record"]
        known[record["record"]] = labels
    return known


def test_the_prometheus_rule_is_well_formed() -> None:
    assert ALERTS["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(ALERTS) == {"apiVersion", "kind", "metadata", "spec"}
    assert ALERTS["metadata"]["name"] and ALERTS["metadata"]["namespace"]
    assert set(ALERTS["spec"]) == {"groups"}
    for group in ALERTS["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and isinstance(group["name"], str)
    # The five alerts users route on keep their names.
    names = [rule["alert"] for rule in RULES]
    assert sorted(names) == sorted(
        PREFIX + name
        for name in ("NoRecentSuccess", "Failing", "ApiUnavailable", "DeadlineExceeded", "OOMKilled")
    )
    for record in RECORDS:
        assert set(record) == {"record", "expr"} and _RECORD_NAME.fullmatch(record["record"]), record
        assert record["record"].startswith("kubelet_endpoints_reconciler:")
    for rule in RULES:
        assert set(rule) <= _ALERT_KEYS and {"alert", "expr", "labels", "annotations"} <= set(rule), rule
        assert _LABEL_NAME.fullmatch(rule["alert"]) and isinstance(rule["expr"], str)
        assert _DURATION.fullmatch(rule.get("for", "0s")), rule["alert"]
        for key, value in {**rule["labels"], **rule["annotations"]}.items():
            assert _LABEL_NAME.fullmatch(key) and isinstance(value, str), (rule["alert"], key)
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert {"summary", "description", "runbook_url", "exit_codes"} <= set(rule["annotations"])


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda rule: rule.get("alert") or rule["record"])
def test_each_expression_parses_and_uses_real_series(rule: dict[str, Any]) -> None:
    expr = promql.parse(rule["expr"])  # raises on a syntax error
    result = _labels(expr, _known_series())
    assert result is not None, "a rule expression must be a vector"
    # Every label an annotation templates is on the result (else it renders empty).
    templated = set(re.findall(r"\$labels\.(\w+)", " ".join(rule.get("annotations", {}).values())))
    assert templated <= result, f"{sorted(templated - result)} not in the result's labels {sorted(result)}"
    if "alert" in rule:
        # One alert per CronJob, never one per Job or pod: a label that changes every run
        # would make a new alert every minute, and Alertmanager notify again.
        assert result == {"namespace", "cronjob"}, sorted(result)


def _exit_codes(rule: dict[str, Any]) -> set[int]:
    return {int(code) for code in rule["annotations"]["exit_codes"].split()}


def test_every_exit_code_is_covered_by_an_alert_that_is_not_the_staleness_backstop() -> None:
    failing = {code for code in ExitCode if code != ExitCode.OK}
    specific = [rule for rule in RULES if rule["alert"] != PREFIX + "NoRecentSuccess"]
    assert set().union(*(_exit_codes(rule) for rule in specific)) == failing
    assert all(_exit_codes(rule) <= failing for rule in RULES)


def test_the_pod_failure_policy_routes_exit_codes_as_the_alerts_expect() -> None:
    """Exit codes in the FailJob rule end as reason PodFailurePolicy (the Failing alert); the others,
    by the backoff limit, as BackoffLimitExceeded (the API-unavailable alert)."""
    (fail_job,) = [r for r in JOB["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail_job["onExitCodes"]["containerName"] == CONTAINER["name"]
    assert fail_job["onExitCodes"]["operator"] == "In"
    assert set(fail_job["onExitCodes"]["values"]) == _exit_codes(BY_NAME[PREFIX + "Failing"])
    others = {int(c) for c in ExitCode if c != ExitCode.OK} - set(fail_job["onExitCodes"]["values"])
    assert others == _exit_codes(BY_NAME[PREFIX + "ApiUnavailable"]) == {4}
    assert 'reason="BackoffLimitExceeded"' in BY_NAME[PREFIX + "ApiUnavailable"]["expr"]
    assert 'reason="PodFailurePolicy"' in BY_NAME[PREFIX + "Failing"]["expr"]


def test_every_selector_names_the_cronjob_of_cronjob_yaml() -> None:
    """The rules select the namespace, CronJob and container that cronjob.yaml deploys."""
    text = " ".join(rule["expr"] for rule in ALL_RULES)
    namespaces = set(re.findall(r'namespace="([^"]*)"', text))
    assert namespaces == {CRONJOB["metadata"]["namespace"]}
    assert set(re.findall(r'(?:cronjob|owner_name)="([^"]*)"', text)) == {CRONJOB["metadata"]["name"]}
    assert set(re.findall(r'container="([^"]*)"', text)) == {CONTAINER["name"]}


# --- runbooks -----------------------------------------------------------------------------


def _runbooks() -> str:
    return OPERATIONS.read_text(encoding="utf-8")


def test_every_alert_links_a_runbook_that_resolves() -> None:
    anchors = github_anchors(_runbooks())
    for rule in RULES:
        url = rule["annotations"]["runbook_url"]
        # Absolute: Alertmanager, PagerDuty and Slack show it outside the repository.
        path, _, anchor = url.removeprefix(RUNBOOK_BASE).partition("#")
        assert url.startswith(RUNBOOK_BASE) and path == "docs/operations.md", url
        assert anchor == rule["alert"].lower() and anchor in anchors, f"{rule['alert']}: no heading for {url}"


def test_the_runbooks_cover_every_exit_code() -> None:
    text = _runbooks()
    for code in ExitCode:
        if code != ExitCode.OK:
            assert re.search(rf"^#+ exit {int(code)}\b", text, re.MULTILINE), (
                f"no runbook for exit {int(code)}"
            )


# --- the CronJob settings the alerts depend on ------------------------------------------------


def test_the_cronjob_keeps_failed_jobs_as_the_alerts_expect() -> None:
    # kube-prometheus-stack's KubeJobFailed fires for a failed Job still there 15 minutes
    # later: ours are gone well before (a minute of margin for controllers and scrapes).
    assert JOB_SPEC.ttl is not None and JOB_SPEC.ttl + 60 <= 15 * 60
    # The alerts count two failed runs since the last success, and the runbooks read the
    # failed pods' termination messages: keep a few, a few minutes.
    assert JOB_SPEC.failed_history >= 2 and JOB_SPEC.ttl >= 5 * 60


# --- promtool: what fires, when ------------------------------------------------------------

NAMESPACE, CRONJOB_NAME = CRONJOB["metadata"]["namespace"], CRONJOB["metadata"]["name"]
OURS = [
    PREFIX + name
    for name in ("Failing", "ApiUnavailable", "DeadlineExceeded", "OOMKilled", "NoRecentSuccess")
]
EVERY = [*OURS, "KubeJobFailed"]


@pytest.fixture(scope="module")
def rule_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    if ksm.promtool() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not installed: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus): alert timelines not tested")
    ours = ksm.rule_file(ALERTS, tmp_path_factory.mktemp("rules") / "alerts.yaml")
    return [ours, reference(ksm.KUBE_JOB_FAILED.name)]


def _annotations(alert: str, absent_arm: bool = False) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for our CronJob."""
    out = {}
    for key, text in BY_NAME[alert]["annotations"].items():
        branch = re.fullmatch(
            r"\{\{ if lt \$value [0-9.]+ \}\}(.*)\{\{ else \}\}(.*)\{\{ end \}\}", text, re.S
        )
        if branch:
            text = branch[1] if absent_arm else branch[2]
        text = text.replace("{{ $labels.namespace }}", NAMESPACE).replace(
            "{{ $labels.cronjob }}", CRONJOB_NAME
        )
        assert "{{" not in text, text
        out[key] = text
    return out


def _expect(alert: str, absent_arm: bool = False) -> list[dict[str, Any]]:
    """One alert for our CronJob, labelled with namespace and cronjob only (it never changes)."""
    labels = {"namespace": NAMESPACE, "cronjob": CRONJOB_NAME, **BY_NAME[alert]["labels"]}
    return [{"exp_labels": labels, "exp_annotations": _annotations(alert, absent_arm)}]


def _promtool(
    rule_files: list[Path],
    tmp_path: Path,
    kinds: Sequence[str],
    firing: dict[str, tuple[range, range]] | None = None,
    absent_arm: bool = False,
) -> None:
    """One promtool test over a scenario: each alert in ``firing`` is present (exactly one, same
    labels) at every minute of its first range and absent at every minute of its second; every
    other alert (KubeJobFailed included) is absent at every minute."""
    firing = firing or {}
    checks: list[dict[str, Any]] = []
    for minute in range(1, len(kinds)):
        for alert in EVERY:
            if alert in firing:
                present, absent = firing[alert]
                if minute in present:
                    checks.append(
                        {
                            "eval_time": f"{minute}m",
                            "alertname": alert,
                            "exp_alerts": _expect(alert, absent_arm),
                        }
                    )
                elif minute in absent:
                    checks.append({"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": []})
            else:
                checks.append({"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": []})
    timeline = ksm.simulate(kinds, JOB_SPEC)
    test = {
        "interval": f"{ksm.SCRAPE}s",
        "input_series": ksm.series(timeline, JOB_SPEC),
        "alert_rule_test": checks,
    }
    output = ksm.run_promtool(test, rule_files, tmp_path)
    assert "SUCCESS" in output and "FAILED" not in output, output[:6000]


def test_a_healthy_cronjob_is_silent(rule_files: list[Path], tmp_path: Path) -> None:
    _promtool(rule_files, tmp_path, ksm.runs(("ok", 90)))


@pytest.mark.parametrize("kind", ["policy", "api", "deadline"])
def test_one_failed_run_then_success_pages_no_one_and_leaves_nothing_firing(
    rule_files: list[Path], tmp_path: Path, kind: str
) -> None:
    """Any class of failure, once: no alert at any minute, KubeJobFailed included."""
    _promtool(rule_files, tmp_path, ksm.runs(("ok", 10), (kind, 1), ("ok", 79)))


def test_one_oom_kill_warns_and_clears_within_30_minutes(rule_files: list[Path], tmp_path: Path) -> None:
    # The OOM run is at minute 10; its Job fails at 10:21.
    _promtool(
        rule_files,
        tmp_path,
        ksm.runs(("ok", 10), ("oom", 1), ("ok", 79)),
        {PREFIX + "OOMKilled": (range(11, 20), range(41, 90))},
    )


def test_a_persistent_failure_pages_once_within_10_minutes_and_resolves_within_5_of_success(
    rule_files: list[Path], tmp_path: Path
) -> None:
    # Runs fail (exit 5, say) from minute 10 to 39; minute 40 succeeds. One stable critical
    # alert (NoRecentSuccess stays quiet: Failing says why), nothing after minute 45.
    _promtool(
        rule_files,
        tmp_path,
        ksm.runs(("ok", 10), ("policy", 30), ("ok", 50)),
        {PREFIX + "Failing": (range(20, 40), range(45, 90))},
    )


def test_a_persistent_api_outage_warns_within_10_minutes_and_resolves_within_5_of_success(
    rule_files: list[Path], tmp_path: Path
) -> None:
    # Exit 4 from minute 10 to 39. After 20 minutes without a success, NoRecentSuccess
    # escalates; both resolve with the first success.
    _promtool(
        rule_files,
        tmp_path,
        ksm.runs(("ok", 10), ("api", 30), ("ok", 50)),
        {
            PREFIX + "ApiUnavailable": (range(20, 40), range(45, 90)),
            PREFIX + "NoRecentSuccess": (range(31, 40), [*range(1, 29), *range(45, 90)]),
        },
    )


def test_persistent_deadline_kills_warn_within_10_minutes_and_resolve_within_5_of_success(
    rule_files: list[Path], tmp_path: Path
) -> None:
    _promtool(
        rule_files,
        tmp_path,
        ksm.runs(("ok", 10), ("deadline", 30), ("ok", 50)),
        {
            PREFIX + "DeadlineExceeded": (range(20, 40), range(45, 90)),
            PREFIX + "NoRecentSuccess": (range(31, 40), [*range(1, 29), *range(45, 90)]),
        },
    )


def test_repeated_oom_kills_stay_one_warning(rule_files: list[Path], tmp_path: Path) -> None:
    # Every run from minute 10 to 39 runs out of memory: one OOMKilled alert throughout, not
    # ApiUnavailable (same Job reason, BackoffLimitExceeded); NoRecentSuccess after 20 minutes.
    _promtool(
        rule_files,
        tmp_path,
        ksm.runs(("ok", 10), ("oom", 30), ("ok", 50)),
        {
            PREFIX + "OOMKilled": (range(11, 40), range(61, 90)),
            PREFIX + "NoRecentSuccess": (range(31, 40), [*range(1, 29), *range(45, 90)]),
        },
    )


@pytest.mark.parametrize(
    ("name", "kinds", "fires", "quiet"),
    [
        # The last success is at minute 9; suspended from 10 to 39.
        (
            "suspended",
            ksm.runs(("ok", 10), ("suspended", 30), ("ok", 50)),
            range(31, 40),
            [*range(1, 29), *range(45, 90)],
        ),
        # Created at -0:30 and never run.
        ("never scheduled", ksm.runs(("missed", 40)), range(21, 40), range(1, 19)),
        # Pods that never start in time: every run killed at the deadline.
        ("never succeeded", ksm.runs(("deadline", 40)), range(21, 40), range(1, 19)),
    ],
)
def test_no_success_for_20_minutes_pages_no_recent_success(
    rule_files: list[Path], tmp_path: Path, name: str, kinds: list[str], fires: range, quiet: Sequence[int]
) -> None:
    firing = {PREFIX + "NoRecentSuccess": (fires, quiet)}
    if name == "never succeeded":
        firing[PREFIX + "DeadlineExceeded"] = (range(7, 40), range(1, 5))
    _promtool(rule_files, tmp_path, kinds, firing)


def test_a_deleted_cronjob_pages_no_recent_success_after_20_minutes(
    rule_files: list[Path], tmp_path: Path
) -> None:
    # Deleted (with its Jobs) at minute 10: no kube-state-metrics series from then on. The
    # absent arm carries namespace and cronjob, from its matchers, like the other arm.
    _promtool(
        rule_files,
        tmp_path,
        ksm.runs(("ok", 10), ("absent", 40)),
        {PREFIX + "NoRecentSuccess": (range(31, 50), range(1, 29))},
        absent_arm=True,
    )
