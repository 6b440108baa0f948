"""lib/placement.py: stable EndpointSlice placement (docs/behaviour.md "What it publishes").

An IP stays in its slice; new IPs fill free room in existing slices, lowest
number first, before a new slice is made; emptied slices are deleted; adding
or removing one IP touches at most one slice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.placement import PlacedSlice, Placement, place

P = "kubelet-ipv4-"
P6 = "kubelet-ipv6-"


def ips(*raw: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(r) for r in raw]


def v4(*last: int) -> list[str]:
    return [f"10.0.0.{i}" for i in last]


def layout(result: Placement) -> dict[str, list[str]]:
    """name -> IPs, the shape of ``live`` for the next run."""
    return {s.name: [str(ip) for ip in s.ips] for s in result.slices}


def run(
    desired: Iterable[str],
    live: Mapping[str, Sequence[str]],
    capacity: int,
    taken: Iterable[str] = (),
    prefix: str = P,
) -> Placement:
    return place(prefix, ips(*desired), live, capacity, taken)


# --- tables ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("desired", "live", "capacity", "taken", "expected", "deletes"),
    [
        pytest.param(v4(), {}, 3, (), {}, (), id="nothing"),
        pytest.param(
            v4(5, 1, 4, 2, 3),
            {},
            2,
            (),
            {P + "0": v4(1, 2), P + "1": v4(3, 4), P + "2": v4(5)},
            (),
            id="fresh-fills-in-ip-order",
        ),
        pytest.param(
            v4(1, 2),
            {P + "0": v4(2), P + "1": v4(1)},
            5,
            (),
            {P + "0": v4(2), P + "1": v4(1)},
            (),
            id="ip-stays-in-its-slice",
        ),
        pytest.param(
            v4(1, 2, 3, 4, 5),
            {P + "0": v4(1), P + "1": v4(2), P + "2": v4(3)},
            2,
            (),
            {P + "0": v4(1, 4), P + "1": v4(2, 5), P + "2": v4(3)},
            (),
            id="new-ips-fill-room-lowest-number-first",
        ),
        pytest.param(
            v4(1, 2, 3),
            {P + "0": v4(1, 2)},
            2,
            (),
            {P + "0": v4(1, 2), P + "1": v4(3)},
            (),
            id="new-slice-only-when-no-room",
        ),
        pytest.param(
            v4(1, 2, 3),
            {P + "1": v4(1, 2)},
            2,
            (),
            {P + "1": v4(1, 2), P + "0": v4(3)},
            (),
            id="new-slice-takes-lowest-free-number",
        ),
        pytest.param(
            v4(1),
            {P + "0": v4(1), P + "1": v4(2), P + "2": v4(3)},
            2,
            (),
            {P + "0": v4(1)},
            (P + "1", P + "2"),
            id="emptied-slices-deleted",
        ),
        pytest.param(
            v4(),
            {P + "0": v4(1), P + "1": v4(2)},
            2,
            (),
            {},
            (P + "0", P + "1"),
            id="everything-removed",
        ),
        pytest.param(
            v4(1, 2, 3, 4),
            {P + "0": v4(1, 2, 3), P + "1": v4(4)},
            2,
            (),
            {P + "0": v4(1, 2), P + "1": v4(3, 4)},
            (),
            id="capacity-lowered-moves-overflow-into-room",
        ),
        pytest.param(
            v4(1, 2, 3, 4, 5),
            {P + "0": v4(1, 2, 3, 4, 5)},
            2,
            (),
            {P + "0": v4(1, 2), P + "1": v4(3, 4), P + "2": v4(5)},
            (),
            id="capacity-lowered-moves-overflow-into-new-slices",
        ),
        pytest.param(
            v4(1, 2, 3),
            {},
            1,
            (P + "0", P + "2"),
            {P + "1": v4(1), P + "3": v4(2), P + "4": v4(3)},
            (),
            id="foreign-names-never-reused",
        ),
        pytest.param(
            v4(1, 2, 3),
            {P + "0": v4(1, 2), P + "1": v4(2, 3), P + "2": v4(3)},
            5,
            (),
            {P + "0": v4(1, 2), P + "1": v4(3)},
            (P + "2",),
            id="duplicates-dropped-from-later-slice",
        ),
        pytest.param(
            v4(1),
            {P + "0": ["10.0.0.1", "10.0.0.1"]},
            5,
            (),
            {P + "0": v4(1)},
            (),
            id="duplicate-within-a-slice",
        ),
        pytest.param(
            v4(1, 2),
            {P + "0": ["bogus", "10.0.0.1", "fd00::1"]},
            5,
            (),
            {P + "0": v4(1, 2)},
            (),
            id="garbage-and-other-family-in-live-dropped",
        ),
        pytest.param(
            v4(1, 2, 3),
            {P + "x": v4(1), P + "0": v4(2)},
            5,
            (),
            {P + "0": v4(2, 3), P + "x": v4(1)},
            (),
            id="unnumbered-live-slice-keeps-its-ips-gets-no-new-ones",
        ),
        pytest.param(
            v4(2),
            {P + "x": v4(1), P + "01": v4(2)},
            5,
            (),
            {P + "01": v4(2)},
            (P + "x",),
            id="unnumbered-live-slice-emptied-deleted",
        ),
        pytest.param(
            v4(1, 2, 3, 4),
            {P + "0": v4(1, 2), P + "1": v4(3, 4)},
            2,
            (),
            {P + "0": v4(1, 2), P + "1": v4(3, 4)},
            (),
            id="full-and-unchanged",
        ),
    ],
)
def test_place(
    desired: list[str],
    live: dict[str, list[str]],
    capacity: int,
    taken: tuple[str, ...],
    expected: dict[str, list[str]],
    deletes: tuple[str, ...],
) -> None:
    result = run(desired, live, capacity, taken)
    assert layout(result) == expected
    assert result.deletes == deletes


def test_ipv6_canonical_form_counts_as_the_same_ip() -> None:
    result = run(["fd00::1", "fd00::2"], {P6 + "0": ["fd00:0::1"]}, 5, prefix=P6)
    assert result.slices == (PlacedSlice(P6 + "0", tuple(ips("fd00::1", "fd00::2")), gains=True),)
    unchanged = run(["fd00::1"], {P6 + "0": ["fd00:0:0::1"]}, 5, prefix=P6)
    assert unchanged.slices == (PlacedSlice(P6 + "0", tuple(ips("fd00::1")), gains=False),)


def test_ips_sorted_numerically_within_a_slice() -> None:
    result = run(v4(10, 9, 100), {}, 5)
    assert layout(result) == {P + "0": ["10.0.0.9", "10.0.0.10", "10.0.0.100"]}


def test_shrinking_slices_are_ordered_before_gaining_ones() -> None:
    # P0 gains 10.0.0.4; P1 gives 10.0.0.2 up. P1 must be written first so no
    # IP is ever in two slices at once.
    result = run(v4(1, 3, 4), {P + "0": v4(1), P + "1": v4(2, 3)}, 2)
    assert [(s.name, s.gains) for s in result.slices] == [(P + "1", False), (P + "0", True)]
    assert layout(result) == {P + "1": v4(3), P + "0": v4(1, 4)}


def test_capacity_lowered_orders_the_giving_slice_first() -> None:
    result = run(v4(1, 2, 3), {P + "0": v4(1, 2, 3)}, 2)
    assert [(s.name, s.gains) for s in result.slices] == [(P + "0", False), (P + "1", True)]


def test_unchanged_slices_do_not_gain() -> None:
    result = run(v4(1, 2), {P + "0": v4(1), P + "1": v4(2)}, 2)
    assert [s.gains for s in result.slices] == [False, False]


def test_slices_sorted_by_number_not_by_name() -> None:
    live = {P + str(i): v4(i) for i in range(12)}
    result = run(v4(*range(12)), live, 1)
    assert [s.name for s in result.slices] == [P + str(i) for i in range(12)]


@pytest.mark.parametrize(
    ("change", "touched"),
    [
        pytest.param(("add", "10.0.0.9"), {P + "1"}, id="add-fills-room"),
        pytest.param(("add", "10.0.0.0"), {P + "1"}, id="add-low-ip-still-into-room"),
        pytest.param(("remove", "10.0.0.1"), {P + "0"}, id="remove-shrinks-one"),
        pytest.param(("remove", "10.0.0.5"), {P + "1"}, id="remove-shrinks-other"),
    ],
)
def test_one_node_added_or_removed_touches_one_slice(change: tuple[str, str], touched: set[str]) -> None:
    live = {P + "0": v4(1, 2, 3), P + "1": v4(4, 5)}
    desired = set(v4(1, 2, 3, 4, 5))
    op, ip = change
    desired = desired | {ip} if op == "add" else desired - {ip}
    result = run(desired, live, 3)
    after = layout(result)
    changed = {name for name in set(live) | set(after) if live.get(name) != after.get(name)}
    assert changed == touched


# --- properties ------------------------------------------------------------------

_POOLS = {
    P: [f"10.0.0.{i}" for i in range(12)],
    P6: [f"fd00::{i:x}" for i in range(1, 13)],
}


def _canon(raw: str) -> str:
    return str(ipaddress.ip_address(raw))


def _noncanonical(raw: str) -> str:
    # Same address, another spelling: fd00::a -> fd00:0:0::a.
    return raw.replace("::", ":0:0::") if ":" in raw else raw


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, set[str], dict[str, list[str]], int, set[str]]:
    prefix = draw(st.sampled_from([P, P6]))
    pool = _POOLS[prefix]
    entry = st.one_of(
        st.sampled_from(pool),
        st.sampled_from(pool).map(_noncanonical),
        st.sampled_from(["bogus", "10.9.9.9" if prefix == P6 else "fd00::99"]),
    )
    names = [prefix + n for n in ("0", "1", "2", "3", "5", "x", "07")]
    live = draw(st.dictionaries(st.sampled_from(names), st.lists(entry, max_size=5), max_size=5))
    desired = draw(st.sets(st.sampled_from(pool)))
    capacity = draw(st.integers(1, 5))
    taken = draw(st.sets(st.sampled_from([prefix + str(i) for i in range(8)]))) - set(live)
    return prefix, desired, live, capacity, taken


def _check_invariants(
    prefix: str,
    desired: set[str],
    live: Mapping[str, Sequence[str]],
    capacity: int,
    taken: set[str],
    result: Placement,
) -> None:
    got = [str(ip) for s in result.slices for ip in s.ips]
    assert sorted(got) == sorted(desired)  # each desired IP exactly once, nothing else
    names = [s.name for s in result.slices]
    assert len(names) == len(set(names))
    for s in result.slices:
        assert 1 <= len(s.ips) <= capacity
        assert list(s.ips) == sorted(s.ips, key=lambda ip: int(ip))
        before = {_canon(a) for a in live.get(s.name, ()) if a != "bogus"}
        assert s.gains == bool({str(ip) for ip in s.ips} - before)
        if s.name not in live:
            assert s.name not in taken  # a foreign name is never reused
            assert s.name.startswith(prefix)
            assert s.name[len(prefix) :].isdigit()
    assert set(result.deletes) <= set(live)
    assert set(result.deletes).isdisjoint(names)
    assert set(live) <= set(names) | set(result.deletes)
    # Slices that give IPs up are written before slices that take new ones.
    gains = [s.gains for s in result.slices]
    assert gains == sorted(gains)


@settings(max_examples=300, deadline=None)
@given(scenario=scenarios())
def test_place_properties(scenario: tuple[str, set[str], dict[str, list[str]], int, set[str]]) -> None:
    prefix, desired, live, capacity, taken = scenario
    result = place(prefix, ips(*desired), live, capacity, taken)
    _check_invariants(prefix, desired, live, capacity, taken, result)

    # Stability: with no duplicates and no overflow, every IP stays where it is.
    held = [(name, _canon(a)) for name, addrs in live.items() for a in set(addrs) if a != "bogus"]
    held = [(name, ip) for name, ip in held if ip in desired]
    per_slice = {name: sum(1 for n, _ in held if n == name) for name in live}
    where = {s.name: {str(ip) for ip in s.ips} for s in result.slices}
    if len({ip for _, ip in held}) == len(held) and all(c <= capacity for c in per_slice.values()):
        for name, ip in held:
            assert ip in where[name]

    # New IPs fill room in numbered live slices before a new slice is made.
    if any(name not in live for name in where):
        for name in live:
            if name[len(prefix) :] in {"0", "1", "2", "3", "5"}:
                assert len(where.get(name, ())) == capacity

    # Re-placing the output as live moves nothing and gains nothing.
    steady = layout(result)
    again = place(prefix, ips(*desired), steady, capacity, taken)
    assert layout(again) == steady
    assert [s.name for s in again.slices] == sorted(steady, key=lambda n: _order(prefix, n))
    assert not any(s.gains for s in again.slices)
    assert again.deletes == ()


def _order(prefix: str, name: str) -> tuple[int, int, str]:
    """Numbered slices by number (no leading zeros), then the others by name."""
    tail = name[len(prefix) :]
    numbered = tail.isdigit() and (tail == "0" or not tail.startswith("0"))
    return (0, int(tail), "") if numbered else (1, 0, name)


@settings(max_examples=300, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_one_ip_added_or_removed_touches_at_most_one_slice(
    scenario: tuple[str, set[str], dict[str, list[str]], int, set[str]], data: st.DataObject
) -> None:
    prefix, desired, live, capacity, taken = scenario
    steady = layout(place(prefix, ips(*desired), live, capacity, taken))
    pool = _POOLS[prefix]
    absent = [ip for ip in pool if ip not in desired]
    ops = [("add", ip) for ip in absent] + [("remove", ip) for ip in sorted(desired)]
    if not ops:
        return
    op, ip = data.draw(st.sampled_from(ops))
    changed_desired = desired | {ip} if op == "add" else desired - {ip}
    result = place(prefix, ips(*changed_desired), steady, capacity, taken)
    _check_invariants(prefix, changed_desired, steady, capacity, taken, result)
    after = layout(result)
    touched = {name for name in set(steady) | set(after) if steady.get(name) != after.get(name)}
    assert len(touched) == 1
    (name,) = touched
    if op == "add":
        assert ip in after[name]
        assert result.deletes == ()
    else:
        assert ip in steady[name]
        assert result.deletes == (() if name in after else (name,))
