"""Benchmark: a reconcile at 1,000 / 5,000 / 15,000 nodes against its JSON floor.

    make bench                      # or: .venv/bin/python -m bench.bench
    .venv/bin/python -m bench.bench --sizes 1000 --runs 3
    .venv/bin/python -m bench.bench --smoke   # seconds; what tests/fake/test_bench.py runs

For each size, one API server process (``bench/server.py``: the fake API
server, nodes of about 20 KB generated once) serves every variant, each run
in a fresh interpreter and measured from outside (wall clock; user+sys CPU
and peak RSS of the child from ``os.wait4``):

* ``reconcile``: ``reconciler.py`` itself, over an unchanged cluster;
* ``floor``: the same pages through the same client, ``json.loads`` each,
  nothing else; ``floor-gc-paused``: the same with the GC paused per page as
  the reconciler does (the stricter floor);
* ``naive``: ``CoreV1Api.list_node()`` with full model deserialisation, then
  the same selection;
* ``write``: ``reconciler.py`` from an empty namespace (every object created),
  the write phase (first write to last) timed from its own log;
* request counts for an unchanged cluster and for one node going NotReady
  and coming back (from the server's request log), and apply body sizes;
* a node-list page-size sweep at the largest size.

Variants are interleaved round by round so a noisy neighbour hits them
alike; each figure is the median of the runs with min and max. Results are
printed as Markdown and saved to ``bench/out/``; the invariants (no write and
no resourceVersion change when nothing changed, node pages + 4 reads, at most
one slice per family rewritten for one node, bodies under 3 MiB) are checked
and a failure makes the exit code 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PYTHON = sys.executable
#: kube-apiserver's default limit on a request body (--max-request-bytes): 3 MiB.
REQUEST_LIMIT = 3 * 1024 * 1024
#: The largest body a run sends: the Endpoints, cut at this many bytes of JSON
#: (lib/desired.py ENDPOINTS_MAX_BYTES, a third of the request limit).
ENDPOINTS_MAX_BYTES = 1 << 20
VARIANTS = ("reconcile", "floor", "floor-gc-paused", "naive")


@dataclass
class Sample:
    """One child process, measured from outside."""

    wall_s: float
    cpu_s: float  # user + sys
    rss_mib: float  # peak resident set size
    stdout: str = field(repr=False, default="")

    def event(self, name: str) -> dict[str, Any]:
        """The last JSON log line with this ``event``."""
        found = []
        for line in self.stdout.splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                doc = json.loads(line)
                if doc.get("event") == name:
                    found.append(doc)
        if not found:
            raise RuntimeError(f"no {name} event in:\n{self.stdout[-2000:]}")
        return found[-1]


def measure(argv: Sequence[str], timeout: float = 900) -> Sample:
    """Run ``argv`` in a fresh process; wall, CPU and peak RSS of that process alone."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{text[-3000:]}")
    # ru_maxrss is in KiB on Linux.
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text)


class Server:
    """``bench/server.py`` in its own process, driven by JSON lines over stdin/stdout."""

    def __init__(self, nodes: int, bulk: int, workdir: Path) -> None:
        self.kubeconfig = str(workdir / f"kubeconfig-{nodes}")
        argv = ["-m", "bench.server", "--nodes", str(nodes), "--bulk", str(bulk), "--kubeconfig"]
        self.proc = subprocess.Popen(
            [PYTHON, *argv, self.kubeconfig],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench server exited ({self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def __call__(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if not reply.get("ok"):
            raise RuntimeError(f"bench server: {op}: {reply.get('error')}")
        return reply

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def serving(nodes: int, bulk: int, workdir: Path) -> Iterator[Server]:
    server = Server(nodes, bulk, workdir)
    try:
        yield server
    finally:
        server.close()


def object_page_size() -> int:
    """``lib.kube.api.OBJECT_PAGE_SIZE``, asked in a child: importing ``lib`` here would
    grow this process, and a child's peak RSS never reads below its parent's."""
    out = subprocess.run(
        [PYTHON, "-c", "from lib.kube.api import OBJECT_PAGE_SIZE as n; print(n)"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(out.stdout)


def stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def describe(samples: Sequence[Sample]) -> dict[str, dict[str, float]]:
    return {
        "wall_s": stats([s.wall_s for s in samples]),
        "cpu_s": stats([s.cpu_s for s in samples]),
        "rss_mib": stats([s.rss_mib for s in samples]),
    }


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


class Bench:
    """One benchmark run: every size, every variant, and the invariants checked."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        from lib.kube.api import PAGE_SIZE

        self.args = args
        self.workdir = workdir
        self.page_size = PAGE_SIZE
        self.failures: list[str] = []
        self.results: dict[str, Any] = {"machine": machine(), "page_size": PAGE_SIZE, "sizes": {}}

    def log(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)
            self.log(f"CHECK FAILED: {what}")

    def reconcile(self, kubeconfig: str, *extra: str) -> Sample:
        return measure([PYTHON, "reconciler.py", "--kubeconfig", kubeconfig, "--timeout", "300", *extra])

    def child(self, *argv: str) -> Sample:
        return measure([PYTHON, "-m", "bench.child", *argv])

    def run(self) -> dict[str, Any]:
        self.results["startup"] = self.startup()
        for n in self.args.sizes:
            self.results["sizes"][str(n)] = self.size(n, sweep=n == max(self.args.sizes))
        self.results["failures"] = self.failures
        return self.results

    def startup(self) -> dict[str, Any]:
        """The fixed cost of every run: interpreter, imports, client; no request."""
        self.log("startup")
        with serving(1, 1000, self.workdir) as server:
            bare, start = [], []
            for _ in range(self.args.runs):
                bare.append(measure([PYTHON, "-c", "pass"]))
                start.append(self.child("start", server.kubeconfig))
        return {"python": describe(bare), "start": describe(start)}

    def size(self, n: int, *, sweep: bool) -> dict[str, Any]:
        self.log(f"{n} nodes: generating")
        with serving(n, self.args.bulk, self.workdir) as server:
            result: dict[str, Any] = {"generated_s": server.hello["generated_s"]}
            self.write_phase(n, server, result)
            self.unchanged(n, server, result)
            self.one_node(n, server, result)
            if sweep:
                result["page_sizes"] = self.page_sweep(server.kubeconfig)
        return result

    def write_phase(self, n: int, server: Server, result: dict[str, Any]) -> None:
        """Every object created from an empty namespace, against the floor replaying the same writes."""
        self.log(f"{n} nodes: write phase, write and floor-write x{self.args.write_runs}")
        kc = server.kubeconfig
        writes_file = str(self.workdir / f"writes-{n}.json")
        samples: dict[str, list[Sample]] = {"write": [], "floor-write": []}
        phase = []
        for i in range(self.args.write_runs):
            server("reset")
            server("clear_log")
            sample = self.reconcile(kc)
            samples["write"].append(sample)
            phase.append(_ts(sample.event("reconcile_finished")) - _ts(sample.event("nodes_listed")))
            if i == 0:
                log = server("log")
                Path(writes_file).write_text(json.dumps(server("writes")["writes"]), encoding="utf-8")
            server("reset")
            samples["floor-write"].append(self.child("floor-write", kc, str(self.page_size), writes_file))
        finished = samples["write"][-1].event("reconcile_finished")
        result["write"] = {
            **describe(samples["write"]),
            "write_phase_s": stats(phase),
            "writes": finished["writes"],
            "requests": finished["requests"],
            "server_log": log,
        }
        result["floor-write"] = describe(samples["floor-write"])
        biggest = max(v["max"] for v in log["patch_bytes"].values())
        self.check(biggest <= ENDPOINTS_MAX_BYTES, f"{n}: an apply body of {biggest} bytes")
        if not self.args.smoke:
            # The largest bodies one can ask for: 1000 endpoints per slice.
            server("reset")
            server("clear_log")
            self.reconcile(kc, "--max-endpoints-per-slice", "1000")
            result["write_max_slice"] = server("log")
            worst = max(v["max"] for v in result["write_max_slice"]["patch_bytes"].values())
            self.check(worst < REQUEST_LIMIT / 2, f"{n}: an apply body of {worst} bytes at 1000 a slice")
        server("reset")
        self.reconcile(kc)

    def unchanged(self, n: int, server: Server, result: dict[str, Any]) -> None:
        """reconcile, floor, floor-gc-paused and naive over an unchanged cluster, interleaved."""
        self.log(f"{n} nodes: {', '.join(VARIANTS)} x{self.args.runs}")
        kc, size = server.kubeconfig, str(self.page_size)
        before = server("versions")["versions"]
        samples: dict[str, list[Sample]] = {name: [] for name in VARIANTS}
        for i in range(self.args.runs):
            server("clear_log")
            sample = self.reconcile(kc)
            samples["reconcile"].append(sample)
            if i == 0:
                result["unchanged_log"] = server("log")
                result["unchanged_summary"] = sample.event("reconcile_finished")
                result["pages"] = sample.event("nodes_listed")["pages"]
            samples["floor"].append(self.child("floor", kc, size))
            samples["floor-gc-paused"].append(self.child("floor-gc-paused", kc, size))
            if not self.args.skip_naive:
                samples["naive"].append(self.child("naive", kc, size))
        for name, got in samples.items():
            if got:
                result[name] = describe(got)
        summary, log = result["unchanged_summary"], result["unchanged_log"]
        result["versions_unchanged"] = server("versions")["versions"] == before
        self.check(summary["writes"] == 0, f"{n}: unchanged cluster, {summary['writes']} writes")
        self.check(result["versions_unchanged"], f"{n}: unchanged cluster, a resourceVersion changed")
        # Service, Endpoints, kubelet Services, and the slices at OBJECT_PAGE_SIZE a page.
        slices = sum(1 for key in before if key.startswith("EndpointSlice/"))
        expected = result["pages"] + 3 + max(1, math.ceil(slices / object_page_size()))
        self.check(log["requests"] == expected, f"{n}: unchanged cluster, {log['requests']} != {expected}")

    def one_node(self, n: int, server: Server, result: dict[str, Any]) -> None:
        """One Ready node goes NotReady, then comes back."""
        self.log(f"{n} nodes: one-node change")
        index = n // 2 + (1 if (n // 2) % 97 == 96 else 0)  # a Ready one (bench/server.py)
        result["one_node"] = {}
        for state in ("False", "True"):
            before = server("versions")["versions"]
            server("set_ready", index=index, ready=state)
            server("clear_log")
            sample = self.reconcile(server.kubeconfig)
            after = server("versions")["versions"]
            rewritten = sorted(k for k in after if before.get(k) != after[k])
            deleted = sorted(k for k in before if k not in after)
            result["one_node"][f"ready={state}"] = {
                "summary": sample.event("reconcile_finished"),
                "server_log": server("log"),
                "rewritten": rewritten,
                "deleted": deleted,
            }
            slices = [k for k in rewritten + deleted if k.startswith("EndpointSlice/")]
            for family in ("ipv4", "ipv6"):
                count = sum(f"-{family}-" in k for k in slices)
                self.check(count <= 1, f"{n}: one node, {count} {family} slices rewritten")

    def page_sweep(self, kubeconfig: str) -> dict[str, Any]:
        samples: dict[int, list[Sample]] = {size: [] for size in self.args.page_sizes}
        pages: dict[int, int] = {}
        for _ in range(self.args.runs):
            for size in self.args.page_sizes:
                self.log(f"page size {size}")
                argv = ["--kubeconfig", kubeconfig, "--timeout", "300"]
                sample = self.child("reconcile", str(size), "--", *argv)
                samples[size].append(sample)
                pages[size] = sample.event("nodes_listed")["pages"]
        return {str(size): {**describe(got), "pages": pages[size]} for size, got in samples.items()}


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    # kubernetes.dynamic imports kubernetes-validate (a dev pin) when it is there.
    dev = importlib.util.find_spec("kubernetes_validate") is not None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": "with the dev requirements" if dev else "runtime requirements only",
    }


# --- report -------------------------------------------------------------------------


def _f(d: dict[str, float], digits: int = 2) -> str:
    return f"{d['median']:.{digits}f} ({d['min']:.{digits}f}-{d['max']:.{digits}f})"


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |\n"


def _requests(log: dict[str, Any]) -> str:
    parts = ", ".join(f"{v} {k}" for k, v in log["by_kind"].items())
    return f"{log['requests']} ({parts})"


def report(results: dict[str, Any], out: IO[str]) -> None:
    """The results as Markdown tables (what docs/performance.md shows)."""
    w = out.write
    m = results["machine"]
    w(f"\nMachine: {m['cpu']}, {m['cores']} cores, Python {m['python']} ({m['packages']}); ")
    w(f"node-list page size {results['page_size']}. Median (min-max) of the runs.\n\n")
    w("| fixed cost | wall s | CPU s | peak RSS MiB |\n|---|---|---|---|\n")
    s = results["startup"]
    for name, key in (("`python -c pass`", "python"), ("imports + client, no request", "start")):
        d = s[key]
        w(_row(name, _f(d["wall_s"]), _f(d["cpu_s"]), _f(d["rss_mib"], 0)))

    w("\n| nodes | variant | wall s | CPU s | peak RSS MiB |\n|---|---|---|---|---|\n")
    for n, r in results["sizes"].items():
        for name in (*VARIANTS, "write", "floor-write"):
            if name in r:
                d = r[name]
                label = f"{name} (from empty)" if name.endswith("write") else name
                w(_row(f"{int(n):,}", label, _f(d["wall_s"]), _f(d["cpu_s"]), _f(d["rss_mib"], 0)))

    w("\nRatios of the medians, wall time (and CPU time):\n\n")
    w("| nodes | reconcile / floor | write / floor-write (from empty) | reconcile / floor-gc-paused ")
    w("| naive / reconcile | naive / reconcile, peak RSS |\n|---|---|---|---|---|---|\n")
    for n, r in results["sizes"].items():

        def ratio(a: str, b: str, key: str, r: dict[str, Any] = r) -> str:
            if a not in r or b not in r:
                return "-"
            return f"{r[a][key]['median'] / r[b][key]['median']:.2f}x"

        def both(a: str, b: str) -> str:
            return f"{ratio(a, b, 'wall_s')} (CPU {ratio(a, b, 'cpu_s')})"

        w(
            _row(
                f"{int(n):,}",
                both("reconcile", "floor"),
                both("write", "floor-write"),
                both("reconcile", "floor-gc-paused"),
                both("naive", "reconcile"),
                ratio("naive", "reconcile", "rss_mib"),
            )
        )

    goals(results, out)

    w("\n| nodes | write phase s | writes | largest apply body | at 1000 endpoints a slice |\n")
    w("|---|---|---|---|---|\n")
    for n, r in results["sizes"].items():
        wr = r["write"]
        biggest = max(v["max"] for v in wr["server_log"]["patch_bytes"].values())
        worst = "-"
        if "write_max_slice" in r:
            most = max(v["max"] for v in r["write_max_slice"]["patch_bytes"].values())
            worst = f"{most / 1024:.0f} KiB ({most / REQUEST_LIMIT:.0%} of 3 MiB)"
        w(_row(f"{int(n):,}", _f(wr["write_phase_s"]), wr["writes"], f"{biggest / 1024:.0f} KiB", worst))

    w("\n| nodes | case | requests (server log) | writes | objects rewritten |\n|---|---|---|---|---|\n")
    for n, r in results["sizes"].items():
        same = "none" if r["versions_unchanged"] else "SOME (resourceVersion changed)"
        writes = r["unchanged_summary"]["writes"]
        w(_row(f"{int(n):,}", "unchanged", _requests(r["unchanged_log"]), writes, same))
        for case, c in r["one_node"].items():
            label = "one node NotReady" if case == "ready=False" else "it comes back"
            changed = ", ".join(x.split("/", 1)[1] for x in c["rewritten"] + c["deleted"]) or "none"
            w(_row(f"{int(n):,}", label, _requests(c["server_log"]), c["summary"]["writes"], changed))

    for n, r in results["sizes"].items():
        if "page_sizes" not in r:
            continue
        w(f"\nPage-size sweep at {int(n):,} nodes (reconcile, unchanged cluster):\n\n")
        w("| page size | pages | wall s | CPU s | peak RSS MiB |\n|---|---|---|---|---|\n")
        for size, d in r["page_sizes"].items():
            w(_row(size, d["pages"], _f(d["wall_s"]), _f(d["cpu_s"]), _f(d["rss_mib"], 0)))
    failures = results.get("failures") or []
    w("\nChecks: " + ("all passed.\n" if not failures else "FAILED: " + "; ".join(failures) + "\n"))


#: Issue 12's goals: at the largest size, wall time at most this share of the floor's
#: (unchanged cluster and from nothing), and the peak RSS at most this, flat over sizes.
GOAL_RATIO = 0.6
GOAL_RSS_MIB = 96.0  # docs/performance.md: the 256 Mi limit, 47 MiB of it the client alone
#: "Flat": the largest size's peak RSS within this factor of the smallest's.
GOAL_FLAT = 1.15


def goals(results: dict[str, Any], out: IO[str]) -> None:
    """The goals, met or not, from this run's medians (reported, not checked: the machine is noisy)."""
    sizes = results["sizes"]
    if not sizes:
        return
    n, r = max(sizes.items(), key=lambda kv: int(kv[0]))

    def wall(name: str) -> float:
        return float(r[name]["wall_s"]["median"])

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    w = out.write
    w(f"\nGoals at {int(n):,} nodes (medians of interleaved runs):\n\n")
    unchanged = wall("reconcile") / wall("floor")
    written = wall("write") / wall("floor-write")
    w(f"- unchanged cluster, reconcile / floor: {unchanged:.2f}x (goal <= {GOAL_RATIO}x): ")
    w(f"{verdict(unchanged <= GOAL_RATIO)}\n")
    w(f"- from nothing, write / floor-write: {written:.2f}x (goal <= {GOAL_RATIO}x): ")
    w(f"{verdict(written <= GOAL_RATIO)}\n")
    peaks = {
        int(k): max(v["reconcile"]["rss_mib"]["median"], v["write"]["rss_mib"]["median"])
        for k, v in sizes.items()
    }
    listed = ", ".join(f"{peaks[k]:.0f}" for k in sorted(peaks))
    worst = max(peaks.values())
    flat = peaks[max(peaks)] / peaks[min(peaks)]
    w(f"- peak RSS (reconcile or write) at {', '.join(f'{k:,}' for k in sorted(peaks))} nodes: ")
    w(f"{listed} MiB (goal <= {GOAL_RSS_MIB:.0f}): {verdict(worst <= GOAL_RSS_MIB)}; ")
    w(f"largest / smallest size {flat:.2f}x (flat: <= {GOAL_FLAT}x): {verdict(flat <= GOAL_FLAT)}\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark the reconciler against its JSON floor.")
    p.add_argument("--sizes", default="1000,5000,15000", help="node counts, comma-separated")
    p.add_argument("--runs", type=int, default=5, help="runs per variant (median, min, max)")
    p.add_argument("--write-runs", type=int, default=3, help="runs from an empty namespace")
    p.add_argument("--bulk", type=int, default=20000, help="bytes of JSON per node")
    p.add_argument("--page-sizes", default="100,250,500,1000,2000", help="the sweep at the largest size")
    p.add_argument("--skip-naive", action="store_true", help="leave the naive variant out")
    p.add_argument("--smoke", action="store_true", help="a tiny run that only proves the benchmark works")
    p.add_argument("--out", help="JSON results file (default: bench/out/results-<time>.json)")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.runs, args.write_runs, args.bulk, args.page_sizes = "12", 1, 1, 2000, "5"
    args.sizes = [int(x) for x in str(args.sizes).split(",")]
    args.page_sizes = [int(x) for x in str(args.page_sizes).split(",")]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        bench = Bench(args, Path(tmp))
        results = bench.run()
    path = Path(args.out) if args.out else OUT / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    report(results, sys.stdout)
    print(f"\nresults: {path}")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
