"""Follow the TaskManager pods: the reflector (:mod:`rmd.kube.reflector`) over one
label-selector pod query, turning each pod into a :class:`PodObservation`.

``synced`` is True once a LIST succeeded and while the watch follows it; it turns False when
listing/watching fails persistently or is forbidden (the engine then answers 503), and only
a successful LIST makes it True again. A quiet watch renewed after its read timeout is
routine and never counts against it.
"""

from __future__ import annotations

from collections.abc import Callable

from kubernetes_asyncio import client

from rmd.core.model import PodObservation
from rmd.kube.listwatch import ResourceQuery
from rmd.kube.observe import observe_pod
from rmd.kube.reflector import Reflector, ReflectorCallbacks, ReflectorTimings
from rmd.kube.retry import RequestObserver
from rmd.retry import Pacing


class PodWatcher(Reflector[PodObservation]):
    """The daemon's one pod watch: the pods of ``namespace`` that ``label_selector`` selects."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        label_selector: str,
        on_event: Callable[[str, PodObservation], None],
        on_snapshot: Callable[[list[PodObservation]], None],
        on_restart: Callable[[str], None] | None = None,
        on_list_started: Callable[[], None] | None = None,
        on_request: RequestObserver | None = None,
        timings: ReflectorTimings | None = None,
        pacing: Pacing | None = None,
    ) -> None:
        query = ResourceQuery(resource="pods", namespace=namespace, label_selector=label_selector)
        callbacks = ReflectorCallbacks(
            convert=observe_pod,  # each pod as its LIST page or event is read
            on_snapshot=on_snapshot,
            on_event=on_event,
            on_restart=on_restart,
            on_list_started=on_list_started,
            on_request=on_request,
        )
        super().__init__(
            api, query, callbacks=callbacks, timings=timings, pacing=pacing, name="pod_watch"
        )
