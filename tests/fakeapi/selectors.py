"""Label selectors in full Kubernetes syntax (k8s.io/apimachinery/pkg/labels)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tests.fakeapi.validation import is_label_value, is_qualified_name


class SelectorError(ValueError):
    """A label selector that does not parse."""


@dataclass(frozen=True, slots=True)
class Requirement:
    """One requirement of a label selector; ``op`` is exists ! = != in notin gt lt."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a label set satisfies this requirement."""
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op == "=":
            return has and value == self.values[0]
        if self.op == "!=":
            return not has or value != self.values[0]
        if self.op == "in":
            return has and value in self.values
        if self.op == "notin":
            return not has or value not in self.values
        try:
            number = int(value or "")
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == "gt" else number < bound


_SEL_TOKEN = re.compile(r"\s*(?:(==|!=|=|!|\(|\)|,|<|>)|([^\s=!(),<>]+))")


def parse_selector(text: str) -> list[Requirement]:
    """Parse a label selector in full Kubernetes syntax; raise :class:`SelectorError`.

    ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``,
    ``k>1``, ``k<1``; a comma is AND. The empty selector matches everything.
    """
    tokens: list[tuple[str, str]] = []  # ("op", text) or ("id", text)
    pos = 0
    while True:
        match = _SEL_TOKEN.match(text, pos)
        if not match:
            break
        pos = match.end()
        tokens.append(("op", match[1]) if match[1] else ("id", match[2]))
    index = 0

    def take() -> tuple[str, str] | None:
        nonlocal index
        if index >= len(tokens):
            return None
        index += 1
        return tokens[index - 1]

    def peek() -> tuple[str, str] | None:
        return tokens[index] if index < len(tokens) else None

    def key_of(token: tuple[str, str] | None) -> str:
        if token is None or token[0] != "id":
            raise SelectorError(f"found {_show(token)}, expected: identifier")
        if not is_qualified_name(token[1]):
            raise SelectorError(f"invalid label key {token[1]!r}: must be a qualified name")
        return token[1]

    def value_of(raw: str) -> str:
        if not is_label_value(raw):
            raise SelectorError(f"invalid label value {raw!r}: must be a valid label value")
        return raw

    requirements: list[Requirement] = []
    if not tokens:
        return requirements
    while True:
        token = take()
        if token == ("op", "!"):
            requirements.append(Requirement(key_of(take()), "!"))
        else:
            key = key_of(token)
            nxt = peek()
            if nxt is None or nxt == ("op", ","):
                requirements.append(Requirement(key, "exists"))
            elif nxt[0] == "op" and nxt[1] in ("=", "==", "!="):
                take()
                raw = ""
                following = peek()
                if following is not None and following[0] == "id":
                    raw = following[1]
                    take()
                requirements.append(Requirement(key, "!=" if nxt[1] == "!=" else "=", (value_of(raw),)))
            elif nxt in (("op", ">"), ("op", "<")):
                take()
                bound = take()
                if bound is None or bound[0] != "id" or not re.fullmatch(r"-?[0-9]+", bound[1]):
                    raise SelectorError(
                        f"for 'gt', 'lt' operators, exactly one integer value is required for {key}"
                    )
                requirements.append(Requirement(key, "gt" if nxt[1] == ">" else "lt", (bound[1],)))
            elif nxt in (("id", "in"), ("id", "notin")):
                take()
                if take() != ("op", "("):
                    raise SelectorError(f"expected '(' after {nxt[1]} for key {key}")
                values: list[str] = []
                while True:
                    item = take()
                    if item is not None and item[0] == "id":
                        values.append(value_of(item[1]))
                        sep = take()
                        if sep == ("op", ")"):
                            break
                        if sep != ("op", ","):
                            raise SelectorError(f"found {_show(sep)}, expected: ',' or ')'")
                    elif item == ("op", ")") and not values:
                        raise SelectorError("for 'in', 'notin' operators, values set can't be empty")
                    else:
                        raise SelectorError(f"found {_show(item)}, expected: value")
                requirements.append(Requirement(key, nxt[1], tuple(values)))
            else:
                raise SelectorError(f"found {_show(nxt)}, expected: in, notin, =, ==, !=, gt, lt")
        sep = take()
        if sep is None:
            return requirements
        if sep != ("op", ","):
            raise SelectorError(f"found {_show(sep)}, expected: ','")


def _show(token: tuple[str, str] | None) -> str:
    return "end of string" if token is None else repr(token[1])


def selector_matches(requirements: Iterable[Requirement], labels: Mapping[str, str]) -> bool:
    """Whether a label set satisfies every requirement (AND)."""
    return all(req.matches(labels) for req in requirements)
