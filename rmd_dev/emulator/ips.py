"""Pod IPs for the node emulator: one loopback address per pod, from 127.1.0.1 upwards.

Linux routes all of 127.0.0.0/8 to the loopback device, so a process can bind to its pod's
address without any setup. Addresses are handed out round-robin (the next free one after the
last handed out), like host-local IPAM, so a freed address is not reused at once by the next
pod while clients of the old one may still talk to it.

Several local clusters may run on one machine at once (parallel test sessions): each emulator
starts at a random /24 of the network (:func:`random_first_index`), so two clusters' pods
rarely share an address — pods that bind fixed ports (Flink's 8081, rmd's 8090) on the
same address would take each other's.
"""

from __future__ import annotations

import ipaddress
import random

POD_NETWORK = ipaddress.IPv4Network("127.1.0.0/16")


ADDRESSES_PER_BLOCK = 254  # a /24 without its .0 and .255


def random_first_index(
    *, network: ipaddress.IPv4Network = POD_NETWORK, rng: random.Random | None = None
) -> int:
    """The index of the first address of a random /24 of ``network`` (its ``.1``)."""
    blocks = max(network.num_addresses // 256, 1)
    return (rng or random.Random()).randrange(blocks) * ADDRESSES_PER_BLOCK


class AddressesExhausted(RuntimeError):
    """Every address of the pod network is in use."""


class PodIpAllocator:
    """Allocates addresses of ``network``, skipping each /24's .0 and .255."""

    def __init__(
        self, *, network: ipaddress.IPv4Network = POD_NETWORK, first_index: int = 0
    ) -> None:
        self._candidates = [
            str(address) for address in network.hosts() if int(address) & 0xFF not in (0, 255)
        ]
        if not self._candidates:
            raise ValueError(f"network {network} has no usable pod addresses")
        self._network = network
        self._in_use: dict[str, str] = {}  # address -> owner (pod uid)
        self._by_owner: dict[str, str] = {}  # owner -> address
        self._next_index = first_index % len(self._candidates)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def capacity(self) -> int:
        return len(self._candidates)

    def owner_of(self, address: str) -> str | None:
        return self._in_use.get(address)

    def allocate(self, *, owner: str) -> str:
        """A free address for ``owner``; the same one again if ``owner`` already holds one."""
        held = self._by_owner.get(owner)
        if held is not None:
            return held
        count = len(self._candidates)
        for step in range(count):
            index = (self._next_index + step) % count
            address = self._candidates[index]
            if address not in self._in_use:
                self._in_use[address] = owner
                self._by_owner[owner] = address
                self._next_index = (index + 1) % count
                return address
        raise AddressesExhausted(f"all {count} addresses of {self._network} are in use")

    def reserve(self, address: str, *, owner: str) -> bool:
        """Claim ``address`` (a pod found running after a restart); False if it is not ours
        to give (outside the network, or held by another owner)."""
        try:
            parsed = ipaddress.IPv4Address(address)
        except ValueError:
            return False
        if parsed not in self._network:
            return False
        holder = self._in_use.get(address)
        if holder is not None:
            return holder == owner
        if owner in self._by_owner:
            return False  # one address per owner
        self._in_use[address] = owner
        self._by_owner[owner] = address
        return True

    def release(self, *, owner: str) -> None:
        """Free whatever ``owner`` holds (nothing happens if it holds nothing)."""
        address = self._by_owner.pop(owner, None)
        if address is not None:
            del self._in_use[address]
