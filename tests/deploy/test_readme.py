"""README.md and docs/ stay in step with the code (flags, exit codes, log events); every link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lib import config
from lib.exitcodes import MEANING, ExitCode
from tests.deploy.docs import github_anchors

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BEHAVIOUR = (ROOT / "docs" / "behaviour.md").read_text(encoding="utf-8")


def _table_after(marker: str, text: str = README) -> list[list[str]]:
    """Rows (cells stripped) of the first Markdown table after ``marker``."""
    start = text.index(marker)
    rows: list[list[str]] = []
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if set("".join(cells)) <= {"-", ":"}:
            continue
        rows.append(cells)
    return rows[1:]  # without the header


def test_exit_code_table_matches_the_code() -> None:
    rows = _table_after("<!-- exit codes:")
    table = {int(code): meaning for code, meaning in rows}
    assert table == {int(code): text for code, text in MEANING.items()}
    assert set(MEANING) == set(ExitCode)


def test_flag_table_matches_the_parser() -> None:
    rows = _table_after("<!-- flags:")
    documented = [row[0].strip("`").split()[0] for row in rows]
    parser_flags = [
        opt for action in config._parser()._actions for opt in action.option_strings if opt.startswith("--")
    ]
    parser_flags.remove("--help")
    # Each boolean flag's --no- form (it undoes the environment variable) is
    # documented once, under the table, not as a row of its own.
    negated = [f for f in parser_flags if f.startswith("--no-")]
    assert negated and all("--" + f[len("--no-") :] in documented for f in negated)
    assert "`--no-<flag>`" in README
    assert documented == [f for f in parser_flags if f not in negated]


def test_flag_table_defaults_match_the_config() -> None:
    defaults = config.Config()
    rows = {row[0].strip("`").split()[0]: row[1] for row in _table_after("<!-- flags:")}
    for flag, shown in rows.items():
        value = getattr(defaults, flag[2:].replace("-", "_"))
        if isinstance(value, bool):
            assert shown == ("on" if value else "off"), flag
        elif value is None or value == "":
            assert shown in ("unset", "empty", "current"), flag
        elif isinstance(value, tuple):
            assert shown == f"`{','.join(value)}`", flag
        else:
            assert shown == f"`{value:g}`" if isinstance(value, float) else shown == f"`{value}`", flag


def test_every_logged_event_is_documented() -> None:
    code = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "lib").glob("**/*.py")))
    logged = set(re.findall(r"\.(?:debug|info|warning|error|log)\((?:\s*\w+,)?\s*\"(\w+)\"", code))
    logged |= set(re.findall(r"\bWarning\(\s*\"(\w+)\"", code))  # lib/plan.py's warnings, logged by run
    logged |= set(re.findall(r"\bevent=\"(\w+)\"", code))  # lib/log.py names library warnings
    logged |= set(re.findall(r"\brestarted(?:: str)?\s*=\s*\"(\w+)\"", code))  # a list's restart event
    documented = {row[0].strip("`") for row in _table_after("<!-- events:", BEHAVIOUR)}
    assert "reconcile_finished" in logged
    assert logged - {"failure_traceback"} == documented


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(doc: Path) -> None:
    # A user who clones the repository must be able to follow every link:
    # no target outside it (../shared is not shipped), none missing, and every
    # #anchor a heading of its file.
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links or doc.name != "README.md"
    for link in links:
        assert not re.match(r"[a-z]+:", link), f"{doc.name}: external link {link}"
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        assert target.is_relative_to(ROOT), f"{doc.name}: {link} leaves the repository"
        assert target.exists(), f"{doc.name}: {link} does not exist"
        if anchor:
            assert anchor in github_anchors(target.read_text(encoding="utf-8")), (
                f"{doc.name}: no heading for {link}"
            )


def test_the_readme_is_short() -> None:
    # Evidence and runbooks live in docs/; the README is what a new user reads.
    assert len(README.encode()) <= 12 * 1024
