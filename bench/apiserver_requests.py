"""kube-apiserver's own count of the requests it served: ``apiserver_request_total`` from its
``/metrics`` (the admin kubeconfig may read it), by verb and resource.

The counter covers every client of the API server — the daemon, but also the scheduler
(``pods/binding``, ``events.k8s.io`` Events), the node emulator as the kubelet
(``pods/status``, the final ``DELETE pods`` with grace period 0 once the containers
stopped, reads of ConfigMaps and Secrets for volumes, node Leases) and the controller
manager. A difference of two readings is a cost of what happened between them; a same-length
reading of a quiet interval is its baseline. Watches are counted when they end.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

METRIC = "apiserver_request_total"
TIMEOUT = 30.0  # seconds


@dataclass(frozen=True, order=True)
class RequestKind:
    """One row of the count: ``verb`` as the API server names it (POST, PUT, PATCH, DELETE,
    DELETECOLLECTION, GET, LIST, WATCH, APPLY), ``resource`` with its subresource
    (``pods/status``) and API group (``events.k8s.io/events``; the core group has none)."""

    verb: str
    resource: str

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}"


Counts = Counter[RequestKind]


def parse_counts(text: str) -> Counts:
    """``apiserver_request_total`` of one scrape, summed over response codes, scopes and
    versions; non-resource requests (``/metrics``, ``/healthz``) are left out."""
    counts: Counts = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != METRIC:
                continue
            labels = sample.labels
            resource = labels.get("resource", "")
            if not resource:
                continue
            if labels.get("subresource"):
                resource = f"{resource}/{labels['subresource']}"
            if labels.get("group"):
                resource = f"{labels['group']}/{resource}"
            counts[RequestKind(labels.get("verb", ""), resource)] += int(sample.value)
    return counts


async def read_counts(api: client.ApiClient) -> Counts:
    """One scrape of kube-apiserver's ``/metrics``."""
    response: Any = await api.call_api(
        "/metrics",
        "GET",
        header_params={"Accept": "text/plain"},
        auth_settings=["BearerToken"],
        _preload_content=False,
        _request_timeout=TIMEOUT,
    )
    async with response:
        text = (await response.read()).decode()
    return parse_counts(text)


def difference(after: Counts, before: Counts) -> Counts:
    """What was counted between two readings (rows that did not change left out)."""
    return Counter(
        {kind: after[kind] - before[kind] for kind in after if after[kind] > before[kind]}
    )


def per_unit(counts: Counts, units: int) -> dict[str, float]:
    """``counts`` divided by ``units`` (e.g. TaskManager lifecycles), as ``"VERB resource"``
    → requests, sorted."""
    return {str(kind): round(counts[kind] / units, 2) for kind in sorted(counts)}


async def quiet(
    api: client.ApiClient,
    *,
    kinds: Callable[[RequestKind], bool],
    settle: float = 2.0,
    timeout: float = 60.0,
) -> Counts:
    """Wait until the rows ``kinds`` selects stop changing for ``settle`` seconds (what
    earlier work left going — a namespace being deleted, pods terminating — has ended);
    the last reading. Raises TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        last = await read_counts(api)
        while True:
            await asyncio.sleep(settle)  # the interval the rows must stay still over
            now = await read_counts(api)
            if _selected(now, kinds) == _selected(last, kinds):
                return now
            last = now


def _selected(counts: Counts, kinds: Callable[[RequestKind], bool]) -> dict[RequestKind, int]:
    return {kind: value for kind, value in counts.items() if kinds(kind)}


def of_resources(*resources: str) -> Callable[[RequestKind], bool]:
    """A selector for :func:`quiet`: the rows of these resources (subresources included)."""
    wanted = set(resources)

    def select(kind: RequestKind) -> bool:
        return any(part in wanted for part in kind.resource.split("/"))

    return select
