"""The state ConfigMap against the real API server: a state near a ConfigMap's 1 MiB limit is
written (with a warning and its size reported); one above it is refused before it is sent."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client
from structlog.testing import capture_logs

from rmd.core.recovery import StateSnapshot, job_state
from rmd.kube.statestore import (
    STATE_SIZE_LIMIT,
    STATE_SIZE_WARNING,
    ConfigMapStateStore,
    StateStoreError,
)

pytestmark = pytest.mark.integration


def state_of_about(size: int) -> StateSnapshot:
    """Jobs with 64-character ids, each holding two slots on its own TaskManager: as many as
    make a document of ``size`` bytes, give or take one job's entry."""

    def state(count: int) -> StateSnapshot:
        return StateSnapshot(
            jobs=tuple(
                job_state(f"{n:064x}", 2, {f"c-taskmanager-1-{1000 + n}": [1, 3]})
                for n in range(count)
            )
        )

    one, two = (len(state(count).to_json()) for count in (1, 2))
    return state(1 + (size - one) // (two - one))


# aiohttp's advice for request bodies above 1 MiB (the state, JSON-escaped inside the
# ConfigMap's JSON, grows by a quarter); sending one such body is what is under test.
@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
async def test_a_state_near_the_limit_is_written_and_one_above_it_is_not_sent(
    kube_api: client.ApiClient, namespace: str
) -> None:
    sizes: list[int] = []
    store = ConfigMapStateStore(
        kube_api, namespace=namespace, cluster_id="c", owner=None, timeout=30, on_size=sizes.append
    )
    near = state_of_about(STATE_SIZE_WARNING + 60 * 1024)
    with capture_logs() as logs:
        await store.write(near)
    assert STATE_SIZE_WARNING <= sizes[-1] <= STATE_SIZE_LIMIT, sizes
    [warning] = [entry for entry in logs if entry["event"] == "state_near_size_limit"]
    assert warning["bytes"] == sizes[-1]
    stored = await store.read()
    assert stored is not None
    assert StateSnapshot.from_json(stored) == near

    too_large = state_of_about(STATE_SIZE_LIMIT + 16 * 1024)
    with pytest.raises(StateStoreError, match=r"more than the 1048576 a ConfigMap may hold"):
        await store.write(too_large)
    assert sizes[-1] > STATE_SIZE_LIMIT
    stored = await store.read()
    assert stored is not None
    assert StateSnapshot.from_json(stored) == near  # nothing sent
