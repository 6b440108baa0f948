"""The README's tables stay in step with the code (flags, exit codes, log events)."""

from __future__ import annotations

import re
from pathlib import Path

from lib import config
from lib.exitcodes import MEANING, ExitCode

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _table_after(marker: str) -> list[list[str]]:
    """Rows (cells stripped) of the first Markdown table after ``marker``."""
    start = README.index(marker)
    rows: list[list[str]] = []
    for line in README[start:].splitlines()[1:]:
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
    code = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "lib").glob("*.py")))
    logged = set(re.findall(r"\.(?:debug|info|warning|error|log)\((?:\s*\w+,)?\s*\"(\w+)\"", code))
    documented = {row[0].strip("`") for row in _table_after("<!-- events:")}
    assert "reconcile_finished" in logged
    assert logged - {"failure_traceback"} == documented
