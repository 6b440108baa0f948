"""Stable EndpointSlice placement, pure (docs/behaviour.md "What it publishes").

An IP stays in the slice it is in; new IPs fill free room in existing slices
(lowest number first) before a new slice is made; slices left empty are
deleted. So adding or removing one node rewrites at most one slice per family
and every other slice keeps its ``resourceVersion``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from lib.nodes import IPAddress, ip_key, parse_ip


@dataclass(frozen=True)
class PlacedSlice:
    """A slice's IPs after placement, and whether it takes IPs it did not hold."""

    name: str
    ips: tuple[IPAddress, ...]  # sorted
    gains: bool  # holds an IP it did not hold before: written after the slices that give IPs up


@dataclass(frozen=True)
class Placement:
    slices: tuple[PlacedSlice, ...]  # non-empty slices, shrinking ones first, then by number
    deletes: tuple[str, ...]  # our live slices left empty


def _number(prefix: str, name: str) -> int | None:
    m = re.fullmatch(re.escape(prefix) + r"(0|[1-9][0-9]*)", name)
    return int(m.group(1)) if m else None


def place(
    prefix: str,
    desired: Iterable[IPAddress],
    live: Mapping[str, Sequence[str]],
    capacity: int,
    taken_names: Iterable[str] = (),
) -> Placement:
    """Place ``desired`` IPs of one family into slices named ``<prefix><n>``.

    ``live`` maps each of our live slices of this family to the addresses it
    holds. ``taken_names`` are names a new slice must not use (other
    managers' slices: applying to one would take it over).
    """
    want = set(desired)

    def order(name: str) -> tuple[int, int, str]:
        n = _number(prefix, name)
        return (0, n, "") if n is not None else (1, 0, name)

    kept: dict[str, list[IPAddress]] = {}
    placed: set[IPAddress] = set()
    for name in sorted(live, key=order):
        held: set[IPAddress] = set()
        for raw in live[name]:
            try:
                held.add(parse_ip(raw))
            except ValueError:
                continue  # not ours to keep: dropped on the next write
        # An IP stays where it is, once (a second copy in a later slice is
        # dropped), up to capacity (a lowered --max-endpoints-per-slice moves
        # the overflow).
        keep = sorted((ip for ip in held if ip in want and ip not in placed), key=ip_key)[:capacity]
        placed.update(keep)
        kept[name] = keep

    # A slice gains when it takes an IP it did not hold: a new one, or room
    # filled from ``new`` (which holds no IP a slice already kept).
    gains: set[str] = set()
    new = sorted(want - placed, key=ip_key)
    for name in sorted(kept, key=order):
        room = capacity - len(kept[name])
        if new and room > 0 and _number(prefix, name) is not None:
            kept[name].extend(new[:room])
            new = new[room:]
            gains.add(name)
    used = set(kept) | set(taken_names)
    n = 0
    while new:
        while f"{prefix}{n}" in used:
            n += 1
        name = f"{prefix}{n}"
        used.add(name)
        kept[name], new = new[:capacity], new[capacity:]
        gains.add(name)

    slices = [
        PlacedSlice(name, tuple(sorted(ips, key=ip_key)), name in gains) for name, ips in kept.items() if ips
    ]
    slices.sort(key=lambda s: (s.gains, order(s.name)))
    deletes = tuple(sorted((name for name, ips in kept.items() if not ips and name in live), key=order))
    return Placement(tuple(slices), deletes)
