"""kube-state-metrics series for a timeline of CronJob runs, as ``promtool test rules`` input.

A scenario is a short table: one entry per minute, what that minute's run did.
:func:`simulate` plays it the way the control plane does for the CronJob of
``cronjob.yaml`` (its history limits and TTL are read from the manifest, so
changing them changes the series), and :func:`series` renders what
kube-state-metrics (2.9 or newer) exposes at every scrape:

* the CronJob: ``kube_cronjob_created``, ``kube_cronjob_spec_suspend``,
  ``kube_cronjob_status_last_schedule_time``,
  ``kube_cronjob_status_last_successful_time`` (once a run succeeded),
  ``kube_cronjob_next_schedule_time``;
* each Job while it exists: ``kube_job_owner``, ``kube_job_status_start_time``,
  ``kube_job_status_active``, ``kube_job_status_succeeded``,
  ``kube_job_status_failed`` (no reason label while nothing failed; once the Job
  failed, one series per reason kube-state-metrics knows,
  ``BackoffLimitExceeded``, ``DeadlineExceeded``, ``Evicted``, 1 for the Job's and
  0 for the others, or, for a reason it does not know such as
  ``PodFailurePolicy``, a single series without reason and the failed-pod
  count: ``internal/store/job.go``), ``kube_job_failed`` /
  ``kube_job_complete`` with ``condition`` true/false/unknown once the Job has
  that condition, ``kube_job_status_completion_time`` on success;
* each pod while it exists: ``kube_pod_owner`` and, once its container ended,
  ``kube_pod_container_status_terminated_reason`` (``Completed``, ``Error``,
  ``OOMKilled``). A pod killed at the Job's deadline is deleted by the Job
  controller and has none.

Every series carries the scrape's target labels as kube-prometheus-stack's
kube-state-metrics ServiceMonitor gives them (``honorLabels``: a metric's own
``pod``/``container``/``namespace`` win over the target's), and a series that
disappears gets a staleness marker, as Prometheus writes one when a series
is missing from a successful scrape.

Run kinds: ``ok``; ``policy`` (exit 1, 2, 3, 5, 6 or 7: the pod failure policy
fails the Job with reason ``PodFailurePolicy``); ``api`` (exit 4 after the
40 s timeout: ``BackoffLimitExceeded``); ``oom`` (killed for memory:
``BackoffLimitExceeded``, container ``OOMKilled``); ``deadline`` (killed at
``activeDeadlineSeconds``: ``DeadlineExceeded``); ``missed`` (no run
scheduled); ``suspended`` (no run, ``spec.suspend`` true); ``absent`` (no
CronJob at all: not yet applied, or deleted with its Jobs).

``python -m tests.ksm`` prints, per scenario, the first and last minute each
alert fires, for the rules in the working tree and, with ``--rev REV``, for
``deploy/alerts.yaml`` and ``cronjob.yaml`` at another revision.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
#: The chart's KubeJobFailed rule (kube-prometheus-stack 88.5.3), evaluated beside ours.
#: kube-prometheus-stack's KubeJobFailed as rendered: material from outside, beside the checkout.
KUBE_JOB_FAILED = ROOT.parent / "shared" / "reference" / "kube-prometheus-stack-88.5.3-KubeJobFailed.yaml"

SCRAPE = 30  # seconds between scrapes of kube-state-metrics, and between rule evaluations
KINDS = ("ok", "policy", "api", "oom", "deadline", "missed", "suspended", "absent")
#: Seconds from the tick to the end of a run, per kind: a run takes a few
#: seconds; exit 4 comes at the 40 s timeout; the deadline kill at 55 s.
_DURATION = {"ok": 8, "policy": 8, "api": 42, "oom": 20, "deadline": 56}
_KNOWN_REASONS = ("BackoffLimitExceeded", "DeadlineExceeded", "Evicted")
_REASON = {"policy": "PodFailurePolicy", "api": "BackoffLimitExceeded", "oom": "BackoffLimitExceeded"}
_REASON["deadline"] = "DeadlineExceeded"
_TERMINATED = {"ok": "Completed", "policy": "Error", "api": "Error", "oom": "OOMKilled"}
#: kube-prometheus-stack's kube-state-metrics target, as its series carry it.
TARGET = {
    "container": "kube-state-metrics",
    "endpoint": "http",
    "instance": "10.244.1.7:8080",
    "job": "kube-state-metrics",
    "namespace": "monitoring",
    "pod": "kps-kube-state-metrics-6d4b9c8f7-x2x9q",
    "service": "kps-kube-state-metrics",
}


@dataclass(frozen=True)
class CronJobSpec:
    """What of ``cronjob.yaml`` shapes the series: names, history limits, TTL."""

    namespace: str
    name: str
    container: str
    failed_history: int
    successful_history: int
    ttl: int | None

    @classmethod
    def from_manifest(cls, text: str) -> CronJobSpec:
        """The CronJob of a ``cronjob.yaml`` text."""
        (cronjob,) = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "CronJob"]
        spec = cronjob["spec"]
        job = spec["jobTemplate"]["spec"]
        (container,) = job["template"]["spec"]["containers"]
        return cls(
            namespace=cronjob["metadata"]["namespace"],
            name=cronjob["metadata"]["name"],
            container=container["name"],
            failed_history=spec.get("failedJobsHistoryLimit", 1),
            successful_history=spec.get("successfulJobsHistoryLimit", 3),
            ttl=job.get("ttlSecondsAfterFinished"),
        )


@dataclass
class Job:
    """One run: its Job and pod, and when each event happened (seconds)."""

    name: str
    kind: str
    start: int
    finish: int
    deleted: float = float("inf")

    @property
    def failed(self) -> bool:
        return self.kind != "ok"


@dataclass
class Timeline:
    """A played scenario: the CronJob's life and its Jobs."""

    minutes: int
    kinds: list[str]
    created: int | None
    jobs: list[Job] = field(default_factory=list)


def runs(*parts: tuple[str, int]) -> list[str]:
    """A per-minute table from (kind, minutes) pairs: ``runs(("ok", 10), ("policy", 30))``."""
    out: list[str] = []
    for kind, count in parts:
        assert kind in KINDS, kind
        out += [kind] * count
    return out


def simulate(kinds: Sequence[str], spec: CronJobSpec) -> Timeline:
    """Play the runs: the CronJob controller's ticks and history limits, the TTL controller."""
    present = [m for m, kind in enumerate(kinds) if kind != "absent"]
    timeline = Timeline(len(kinds), list(kinds), created=present[0] * 60 - 30 if present else None)
    for minute, kind in enumerate(kinds):
        if kind in _DURATION:
            start = minute * 60 + 1
            name = f"{spec.name}-{29000000 + minute}"  # the controller's scheduled-minute suffix
            timeline.jobs.append(Job(name, kind, start, start + _DURATION[kind]))
    for job in timeline.jobs:
        if spec.ttl is not None:
            job.deleted = job.finish + spec.ttl
    # The CronJob controller, syncing after each Job finishes, keeps the
    # newest `limit` finished Jobs of each outcome and deletes the older ones.
    for failed, limit in ((True, spec.failed_history), (False, spec.successful_history)):
        same = [job for job in timeline.jobs if job.failed == failed]
        for i, job in enumerate(same):
            if i + limit < len(same):
                pusher = same[i + limit]
                job.deleted = min(job.deleted, pusher.finish + 1)
    # Deleting the CronJob deletes its Jobs (garbage collection).
    for minute, kind in enumerate(kinds):
        if kind == "absent" and timeline.created is not None and minute * 60 > timeline.created:
            for job in timeline.jobs:
                job.deleted = min(job.deleted, minute * 60)
    return timeline


def _labels(**labels: str) -> str:
    merged = {**TARGET, **labels}
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(merged.items()) if v != "") + "}"


def _scrape(timeline: Timeline, spec: CronJobSpec, t: int) -> dict[str, float]:
    """What kube-state-metrics exposes at time t: series text -> value."""
    out: dict[str, float] = {}
    minute = min(t // 60, timeline.minutes - 1)
    kind = timeline.kinds[minute]
    ns = spec.namespace
    if kind == "absent" or timeline.created is None or t < timeline.created:
        return out
    cj = {"namespace": ns, "cronjob": spec.name}
    out["kube_cronjob_created" + _labels(**cj)] = timeline.created
    out["kube_cronjob_spec_suspend" + _labels(**cj)] = 1.0 if kind == "suspended" else 0.0
    out["kube_cronjob_next_schedule_time" + _labels(**cj)] = (t // 60 + 1) * 60
    started = [job for job in timeline.jobs if job.start - 1 <= t]
    if started:
        out["kube_cronjob_status_last_schedule_time" + _labels(**cj)] = started[-1].start - 1
    # The controller records the last success when it sees the Job complete.
    succeeded = [job for job in timeline.jobs if not job.failed and job.finish + 1 <= t]
    if succeeded:
        out["kube_cronjob_status_last_successful_time" + _labels(**cj)] = succeeded[-1].finish
    for job in timeline.jobs:
        if not job.start - 1 <= t < job.deleted:
            continue
        j = {"namespace": ns, "job_name": job.name}
        done = job.finish <= t
        owner = {"owner_kind": "CronJob", "owner_name": spec.name, "owner_is_controller": "true"}
        out["kube_job_owner" + _labels(**j, **owner)] = 1
        out["kube_job_status_start_time" + _labels(**j)] = job.start
        out["kube_job_status_active" + _labels(**j)] = 0 if done else 1
        out["kube_job_status_succeeded" + _labels(**j)] = 1 if done and not job.failed else 0
        if done and job.failed:
            reason = _REASON[job.kind]
            if reason in _KNOWN_REASONS:
                for known in _KNOWN_REASONS:
                    out["kube_job_status_failed" + _labels(**j, reason=known)] = 1 if known == reason else 0
            else:
                out["kube_job_status_failed" + _labels(**j)] = 1
        else:
            out["kube_job_status_failed" + _labels(**j)] = 0
        if done:
            family = "kube_job_failed" if job.failed else "kube_job_complete"
            for condition in ("true", "false", "unknown"):
                out[family + _labels(**j, condition=condition)] = 1 if condition == "true" else 0
            if not job.failed:
                out["kube_job_status_completion_time" + _labels(**j)] = job.finish
        # The pod: created with the Job; a deadline kill deletes it.
        if job.kind == "deadline" and done:
            continue
        pod = f"{job.name}-{_suffix(job.name)}"
        p = {"namespace": ns, "pod": pod, "uid": f"uid-{pod}"}
        pod_owner = {"owner_kind": "Job", "owner_name": job.name, "owner_is_controller": "true"}
        out["kube_pod_owner" + _labels(**p, **pod_owner)] = 1
        if done:
            reason = _TERMINATED[job.kind]
            key = "kube_pod_container_status_terminated_reason" + _labels(
                **p, container=spec.container, reason=reason
            )
            out[key] = 1
    return out


def _suffix(name: str) -> str:
    return "".join("bcdfghjklmnpqrstvwxz"[ord(c) % 20] for c in name[-5:])


def series(timeline: Timeline, spec: CronJobSpec) -> list[dict[str, str]]:
    """promtool ``input_series``: one value per scrape, ``stale`` where a series disappears."""
    steps = timeline.minutes * 60 // SCRAPE
    values: dict[str, list[str]] = {}
    for step in range(steps):
        scrape = _scrape(timeline, spec, step * SCRAPE)
        for key in scrape:
            values.setdefault(key, ["_"] * steps)
        for key, column in values.items():
            if key in scrape:
                column[step] = _number(scrape[key])
            elif step and column[step - 1] not in ("_", "stale"):
                column[step] = "stale"
    return [{"series": key, "values": " ".join(column)} for key, column in values.items()]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def rule_file(prometheus_rule: dict[str, Any], path: Path) -> Path:
    """Write a PrometheusRule's groups as a plain Prometheus rule file."""
    path.write_text(yaml.safe_dump({"groups": prometheus_rule["spec"]["groups"]}), encoding="utf-8")
    return path


def promtool() -> str | None:
    """The promtool on PATH (``.ci/run`` installs it), or None."""
    return shutil.which("promtool")


def run_promtool(test: dict[str, Any], rule_files: Iterable[Path], workdir: Path) -> str:
    """Run ``promtool test rules`` on one test file; return its output (raises on a usage error)."""
    tool = promtool()
    assert tool, "promtool is not installed"
    doc = {"rule_files": [str(p) for p in rule_files], "evaluation_interval": f"{SCRAPE}s", "tests": [test]}
    path = workdir / "test.yaml"
    path.write_text(yaml.safe_dump(doc, width=1 << 20), encoding="utf-8")
    result = subprocess.run([tool, "test", "rules", str(path)], capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode in (0, 1), output
    assert result.returncode == 0 or "FAILED" in output, output
    return output


_GOT = re.compile(r"alertname: (\w+), time: ([0-9hms]+),\s*\n\s*exp:\[\],\s*\n\s*got:\[(.*?)\n\s*\]", re.S)


def _seconds(duration: str) -> int:
    total = 0
    for number, unit in re.findall(r"(\d+)([hms])", duration):
        total += int(number) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def firing(
    kinds: Sequence[str], spec: CronJobSpec, rule_files: Sequence[Path], alerts: Sequence[str], workdir: Path
) -> dict[str, dict[int, list[str]]]:
    """Per alert, per minute of the scenario: the label sets of its firing alerts (promtool's own answer).

    Asks promtool to expect nothing every minute and reads what it got instead.
    """
    timeline = simulate(kinds, spec)
    test = {
        "interval": f"{SCRAPE}s",
        "input_series": series(timeline, spec),
        "alert_rule_test": [
            {"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": []}
            for minute in range(1, len(kinds))
            for alert in alerts
        ],
    }
    output = run_promtool(test, rule_files, workdir)
    out: dict[str, dict[int, list[str]]] = {alert: {} for alert in alerts}
    for alert, at, got in _GOT.findall(output):
        out[alert][_seconds(at) // 60] = re.findall(r"Labels:(\{.*?\})\n", got)
    return out


ALERTS = (
    "KubeletEndpointsReconcilerFailing",
    "KubeletEndpointsReconcilerApiUnavailable",
    "KubeletEndpointsReconcilerDeadlineExceeded",
    "KubeletEndpointsReconcilerOOMKilled",
    "KubeletEndpointsReconcilerNoRecentSuccess",
    "KubeJobFailed",
)

#: The scenarios of the issue (tests/deploy/test_alerts.py asserts on the same tables).
SCENARIOS: dict[str, list[str]] = {
    "healthy": runs(("ok", 90)),
    "one policy failure": runs(("ok", 10), ("policy", 1), ("ok", 79)),
    "one api failure": runs(("ok", 10), ("api", 1), ("ok", 79)),
    "one deadline kill": runs(("ok", 10), ("deadline", 1), ("ok", 79)),
    "one oom kill": runs(("ok", 10), ("oom", 1), ("ok", 79)),
    "persistent policy failure 30m": runs(("ok", 10), ("policy", 30), ("ok", 50)),
    "persistent api outage 30m": runs(("ok", 10), ("api", 30), ("ok", 50)),
    "persistent deadline kills 30m": runs(("ok", 10), ("deadline", 30), ("ok", 50)),
    "suspended 30m": runs(("ok", 10), ("suspended", 30), ("ok", 50)),
    "never scheduled": runs(("missed", 40)),
    "never succeeded (policy)": runs(("policy", 40)),
    "cronjob deleted": runs(("ok", 10), ("absent", 40)),
}


def _intervals(minutes: dict[int, list[str]]) -> str:
    if not minutes:
        return "-"
    spans: list[list[int]] = []
    for minute in sorted(minutes):
        if spans and spans[-1][1] == minute - 1:
            spans[-1][1] = minute
        else:
            spans.append([minute, minute])
    distinct = len({labels for sets in minutes.values() for labels in sets})
    text = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)
    return f"{text} ({distinct} label set{'s' if distinct != 1 else ''})"


def main(argv: Sequence[str] | None = None) -> None:
    """Print each scenario's alert timeline (first-last firing minute) for one revision of the rules."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--rev", help="git revision of deploy/alerts.yaml and cronjob.yaml (default: worktree)"
    )
    args = parser.parse_args(argv)

    def read(path: str) -> str:
        if args.rev is None:
            return (ROOT / path).read_text(encoding="utf-8")
        return subprocess.run(
            ["git", "show", f"{args.rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout

    spec = CronJobSpec.from_manifest(read("cronjob.yaml"))
    rule = next(d for d in yaml.safe_load_all(read("deploy/alerts.yaml")) if d)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rules = [rule_file(rule, work / "rules.yaml"), KUBE_JOB_FAILED]
        print(f"ttlSecondsAfterFinished={spec.ttl} failedJobsHistoryLimit={spec.failed_history}")
        for name, kinds in SCENARIOS.items():
            result = firing(kinds, spec, rules, ALERTS, work)
            cells = [
                f"{alert.removeprefix('KubeletEndpointsReconciler')}: {_intervals(result[alert])}"
                for alert in ALERTS
                if result[alert]
            ]
            print(f"{name}: " + ("; ".join(cells) or "nothing fires"))


if __name__ == "__main__":
    main()
