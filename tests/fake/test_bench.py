"""The benchmark (``bench/``) still runs: its smoke mode, a dozen nodes, in seconds.

The benchmark itself is run by hand (``make bench``); this only keeps it from
rotting: every variant, the write phase, the request counts and the checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_measures_every_variant_and_passes_its_checks(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Checks: all passed." in proc.stdout
    assert "reconcile / floor:" in proc.stdout and "write / floor-write:" in proc.stdout
    assert "peak RSS (reconcile or write)" in proc.stdout
    results = json.loads(out.read_text())
    (size,) = results["sizes"].values()
    for variant in ("reconcile", "floor", "floor-gc-paused", "naive", "write", "floor-write"):
        assert size[variant]["wall_s"]["median"] > 0
        assert size[variant]["rss_mib"]["median"] > 0
    assert size["unchanged_log"]["requests"] == size["pages"] + 4
    assert size["one_node"]["ready=False"]["summary"]["writes"] >= 1
    assert size["page_sizes"]["5"]["pages"] == 3


def test_the_benchmark_checks_bodies_against_the_products_own_bound() -> None:
    from bench import bench
    from lib import desired

    assert bench.ENDPOINTS_MAX_BYTES == desired.ENDPOINTS_MAX_BYTES
