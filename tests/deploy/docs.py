"""Reading the repository's YAML manifests and Markdown, for the tests that check them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

#: Material from outside the project (kube-prometheus-stack's renders, with
#: their provenance in its README), beside the checkout, never committed here.
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"


def reference(name: str) -> Path:
    """A file of ``../shared/reference``; the test is skipped with one line where it is absent."""
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"{path} absent: the kube-prometheus-stack reference renders live in ../shared/reference")
    return path


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a file."""
    with open(path, encoding="utf-8") as src:
        return [doc for doc in yaml.safe_load_all(src) if doc]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one document of ``kind`` (fails if there are none or several)."""
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings (code blocks skipped)."""
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
