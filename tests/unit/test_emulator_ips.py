"""The emulator's pod IP allocator: one loopback address per pod, round-robin, freed on release."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmd_dev.emulator.ips import AddressesExhausted, PodIpAllocator, random_first_index


def test_first_addresses_come_from_127_1_and_skip_network_address() -> None:
    ips = PodIpAllocator()
    assert ips.allocate(owner="a") == "127.1.0.1"
    assert ips.allocate(owner="b") == "127.1.0.2"


def test_each_emulator_starts_at_a_random_block_so_parallel_clusters_rarely_share() -> None:
    starts = {
        PodIpAllocator(first_index=random_first_index(rng=random.Random(seed))).allocate(owner="a")
        for seed in range(20)
    }
    assert len(starts) > 15  # 256 blocks: 20 clusters almost never meet
    for address in starts:
        assert ipaddress.IPv4Address(address) in ipaddress.IPv4Network("127.1.0.0/16")
        assert address.endswith(".1")


def test_same_owner_keeps_its_address() -> None:
    ips = PodIpAllocator()
    first = ips.allocate(owner="a")
    assert ips.allocate(owner="a") == first
    assert ips.in_use == 1


def test_released_address_is_not_reused_at_once() -> None:
    ips = PodIpAllocator()
    first = ips.allocate(owner="a")
    ips.release(owner="a")
    assert ips.allocate(owner="b") != first
    assert ips.owner_of(first) is None


def test_wraps_around_and_reuses_freed_addresses() -> None:
    ips = PodIpAllocator(network=ipaddress.IPv4Network("127.9.0.0/30"))  # .1 and .2 usable
    assert ips.capacity == 2
    a = ips.allocate(owner="a")
    b = ips.allocate(owner="b")
    with pytest.raises(AddressesExhausted):
        ips.allocate(owner="c")
    ips.release(owner="a")
    assert ips.allocate(owner="c") == a
    assert {a, b} == {"127.9.0.1", "127.9.0.2"}


def test_skips_dot_zero_and_dot_255_of_every_slash_24() -> None:
    ips = PodIpAllocator(network=ipaddress.IPv4Network("127.9.0.0/23"))
    handed = [ips.allocate(owner=str(n)) for n in range(ips.capacity)]
    assert "127.9.0.255" not in handed
    assert "127.9.1.0" not in handed
    assert len(handed) == 2 * 254


def test_reserve_claims_a_known_address_once() -> None:
    ips = PodIpAllocator()
    assert ips.reserve("127.1.3.4", owner="a")
    assert ips.reserve("127.1.3.4", owner="a")  # idempotent for the same owner
    assert not ips.reserve("127.1.3.4", owner="b")
    assert not ips.reserve("10.0.0.1", owner="c")  # not ours to give
    assert not ips.reserve("not-an-ip", owner="c")
    assert ips.allocate(owner="a") == "127.1.3.4"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 9)), max_size=60))
def test_no_two_owners_ever_share_an_address(steps: list[tuple[bool, int]]) -> None:
    ips = PodIpAllocator(network=ipaddress.IPv4Network("127.9.0.0/28"))
    held: dict[str, str] = {}
    for allocate, number in steps:
        owner = f"pod-{number}"
        if allocate:
            held[owner] = ips.allocate(owner=owner)
        else:
            ips.release(owner=owner)
            held.pop(owner, None)
        assert len(set(held.values())) == len(held)
        assert ips.in_use == len(held)
