"""docs/migration.md, executed on a real kube-apiserver.

Objects are seeded as prometheus-operator's kubelet controller writes them
(tests/real/prometheus_operator.py: plain create, three ports, duplicate addresses, a
generateName slice) with the seed case's nodes; then every shell line of the
guide's blocks marked ``<!-- migration: FLAVOUR -->`` runs as written, with
the real ``kubectl``, against that server (the namespace swapped for one of
the test's own, the interpreter for this one). Then: each IP once across
Endpoints and slices, the Service's ports exactly ours, no foreign slice,
and a following run that writes nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import k8stools
from tests.real.prometheus_operator import OPERATOR, SLICES, operator_objects, seed_case
from tests.realserver import RealApiServer
from tests.runs import run_main

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "migration.md").read_text(encoding="utf-8")
FLAVOURS = {"kube-prometheus": "kubelet", "kube-prometheus-stack": "kps-kube-prometheus-stack-kubelet"}


def blocks(flavour: str) -> list[list[str]]:
    """The shell lines of each block marked for ``flavour``, in order."""
    found = re.findall(rf"<!-- migration: {re.escape(flavour)} -->\s*```sh\n(.*?)```", GUIDE, re.DOTALL)
    return [[line.strip() for line in block.splitlines() if line.strip()] for block in found]


def test_every_flavour_has_its_take_over_and_check_blocks() -> None:
    for flavour, service in FLAVOURS.items():
        take_over, check = blocks(flavour)
        assert all("--take-over" in line for line in take_over) and "--dry-run" in take_over[0]
        assert all(f" {service} " in f" {line} " or f"={service}" in line for line in check), check


@pytest.mark.real
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_guide_takes_over_from_prometheus_operator(
    real: RealApiServer, tmp_path: Path, flavour: str
) -> None:
    kubectl = k8stools.require("kubectl")
    service = FLAVOURS[flavour]
    seed_case(real)
    ns = real.new_namespace("migrate")
    operator_objects(real, ns, service)
    env = {
        **os.environ,
        "KUBECONFIG": real.write_kubeconfig(tmp_path / "kubeconfig"),
        "PATH": f"{Path(kubectl).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
    }

    def sh(line: str) -> str:
        line = line.replace("kube-system", ns).replace(".venv/bin/python ", f"{sys.executable} ")
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", line],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    take_over, check = blocks(flavour)
    before = real.versions(ns)
    dry = sh(take_over[0])
    assert "foreign_endpointslice_deleted" in dry and "foreign_fields_removed" in dry
    assert real.versions(ns) == before  # a dry run writes nothing
    sh(take_over[1])

    duplicates, ports, slices = (sh(line) for line in check)
    assert duplicates == ""
    assert ports.split() == ["https-metrics", "cadvisor"]
    rows = slices.splitlines()[1:]
    assert rows and all(row.split()[-1] == "kubelet-endpoints-reconciler" for row in rows), slices

    ep = real.ok("GET", f"/api/v1/namespaces/{ns}/endpoints/{service}")
    ep_ips = sorted(a["ip"] for s in ep["subsets"] for a in s["addresses"])
    listed = real.ok(
        "GET", SLICES.format(ns=ns), query={"labelSelector": f"kubernetes.io/service-name={service}"}
    )
    slice_ips = sorted(a for s in listed["items"] for e in s["endpoints"] for a in e["addresses"])
    assert ep_ips == slice_ips == ["1.2.3.4", "10.0.0.5", "10.0.0.6"]
    assert not [s for s in listed["items"] if OPERATOR in s["metadata"]["labels"].values()]

    settled = real.versions(ns)
    kubeconfig = env["KUBECONFIG"]
    for extra in ((), ("--take-over",)):
        argv = [
            "--kubeconfig",
            kubeconfig,
            "--namespace",
            ns,
            "--service-name",
            service,
            "--termination-log",
            "",
        ]
        r = run_main([*argv, *extra], {"HOME": str(tmp_path)})
        assert r.code == 0 and r.finished["writes"] == 0, r.finished
    assert real.versions(ns) == settled
