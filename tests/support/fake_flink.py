"""A fake Flink JobManager REST API that answers with the shapes recorded from Flink 2.3.0.

Every answer is a recorded answer from ``tests/golden/flink/`` with only the values rmd
reads replaced (ids, states, parallelism, slot-sharing groups, slots), so the shapes stay
exactly Flink's. Tests set the state::

    async with FakeFlink() as flink:
        flink.add_job("a" * 32, parallelism=2)                    # default scheduler
        flink.add_job("b" * 32, parallelism=2, scheduler="Adaptive", groups=2)
        flink.add_taskmanager("flink-taskmanager-1-1", slots=4, jobs=["a" * 32])
        flink.jobs["a" * 32].state = "CANCELED"
        flink.overrides["/jobs/overview"] = (200, {"jobs": "nope"})  # a bad answer
        flink.applications = {"c" * 32: "RUNNING"}  # /applications/overview (None: 404, 1.x)
        await flink.down(); await flink.up()                      # connection refused, back

``requests`` lists every path asked, in order.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "flink"


def golden(name: str) -> Any:
    """A recorded answer, decoded."""
    return json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))


@dataclass
class FakeVertex:
    vertex_id: str
    parallelism: int
    slot_sharing_group: str | None
    upper_bound: int | None = None  # adaptive scheduler; None = the parallelism


@dataclass
class FakeJob:
    job_id: str
    vertices: list[FakeVertex]
    state: str = "RUNNING"
    scheduler: str | None = "Default"  # None: no schedulerType field, as in Flink 1.x


@dataclass
class FakeTaskManager:
    taskmanager_id: str
    slots: int
    jobs: list[str] = field(default_factory=list)  # the job of each allocated slot


class FakeFlink:
    def __init__(self) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.taskmanagers: dict[str, FakeTaskManager] = {}
        # application id -> status; None: no /applications/overview (Flink 1.x answers 404)
        self.applications: dict[str, str] | None = None
        self.overrides: dict[str, tuple[int, object]] = {}  # path -> (status, body) answered
        self.requests: list[str] = []
        self._port = 0
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/jobs/overview", self._jobs_overview)
        app.router.add_get("/applications/overview", self._applications_overview)
        app.router.add_get("/jobs/{job_id}", self._job)
        app.router.add_get("/jobs/{job_id}/resource-requirements", self._requirements)
        app.router.add_get("/taskmanagers", self._taskmanagers)
        app.router.add_get("/taskmanagers/{taskmanager_id}", self._taskmanager)
        self._app = app

    # ------------------------------------------------------------------ life cycle

    async def __aenter__(self) -> FakeFlink:
        await self.up()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.down()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def up(self) -> None:
        """Listen (again, on the same port after :meth:`down`)."""
        runner = web.AppRunner(self._app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def down(self) -> None:
        """Stop listening: connections are refused until :meth:`up`."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ state

    def add_job(
        self,
        job_id: str,
        *,
        parallelism: int,
        groups: int = 1,
        scheduler: str | None = "Default",
        state: str = "RUNNING",
    ) -> FakeJob:
        """A generator -> map -> sink job; with ``groups`` 2 the sink has its own
        slot-sharing group (as EndlessJob.java with a sink group)."""
        shared = f"{job_id[:16]}{'0' * 16}"
        vertices = [
            FakeVertex(f"{job_id[:24]}source00", parallelism, shared),
            FakeVertex(f"{job_id[:24]}double00", parallelism, shared),
        ]
        sink_group = shared if groups == 1 else f"{job_id[:16]}{'1' * 16}"
        vertices.append(FakeVertex(f"{job_id[:24]}discard0", parallelism, sink_group))
        job = FakeJob(job_id, vertices, state=state, scheduler=scheduler)
        self.jobs[job_id] = job
        return job

    def add_taskmanager(
        self, taskmanager_id: str, *, slots: int, jobs: list[str] | None = None
    ) -> FakeTaskManager:
        taskmanager = FakeTaskManager(taskmanager_id, slots, list(jobs or []))
        self.taskmanagers[taskmanager_id] = taskmanager
        return taskmanager

    def asked(self, path: str) -> int:
        return self.requests.count(path)

    # ------------------------------------------------------------------ handlers

    def _answer(self, request: web.Request, body: object, *, status: int = 200) -> web.Response:
        self.requests.append(request.path)
        if request.path in self.overrides:
            status, body = self.overrides[request.path]
        return web.json_response(body, status=status)

    async def _jobs_overview(self, request: web.Request) -> web.Response:
        template = golden("jobs-overview")["jobs"][0]
        entries = []
        for job in self.jobs.values():
            entry = copy.deepcopy(template)
            entry["jid"] = job.job_id
            entry["state"] = job.state
            _set_scheduler(entry, job.scheduler)
            entries.append(entry)
        return self._answer(request, {"jobs": entries})

    async def _applications_overview(self, request: web.Request) -> web.Response:
        if self.applications is None:
            return self._answer(
                request, {"errors": ["Not found: /applications/overview"]}, status=404
            )
        template = golden("applications-overview-finished")["applications"][0]
        entries = []
        for application_id, status in self.applications.items():
            entry = copy.deepcopy(template)
            entry["id"] = application_id
            entry["status"] = status
            entries.append(entry)
        return self._answer(request, {"applications": entries})

    async def _job(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            return self._answer(request, golden("job-unknown-404"), status=404)
        body = golden("job-one-slot-sharing-group")
        template = body["vertices"][0]
        body["jid"] = body["application-id"] = body["plan"]["jid"] = job.job_id
        body["state"] = job.state
        _set_scheduler(body, job.scheduler)
        body["vertices"] = []
        for vertex in job.vertices:
            entry = copy.deepcopy(template)
            entry["id"] = vertex.vertex_id
            entry["parallelism"] = vertex.parallelism
            if vertex.slot_sharing_group is None:
                del entry["slotSharingGroupId"]
            else:
                entry["slotSharingGroupId"] = vertex.slot_sharing_group
            body["vertices"].append(entry)
        return self._answer(request, body)

    async def _requirements(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            return self._answer(request, golden("job-unknown-404"), status=404)
        if job.scheduler != "Adaptive":
            body = golden("resource-requirements-default-scheduler-500")
            return self._answer(request, body, status=500)
        requirements = {
            vertex.vertex_id: {
                "parallelism": {
                    "lowerBound": 1,
                    "upperBound": vertex.upper_bound or vertex.parallelism,
                }
            }
            for vertex in job.vertices
        }
        return self._answer(request, requirements)

    async def _taskmanagers(self, request: web.Request) -> web.Response:
        template = golden("taskmanagers")["taskmanagers"][0]
        entries = []
        for taskmanager in self.taskmanagers.values():
            entry = copy.deepcopy(template)
            _fill_taskmanager(entry, taskmanager)
            entries.append(entry)
        return self._answer(request, {"taskmanagers": entries})

    async def _taskmanager(self, request: web.Request) -> web.Response:
        taskmanager = self.taskmanagers.get(request.match_info["taskmanager_id"])
        if taskmanager is None:
            return self._answer(request, golden("taskmanager-unknown-500"), status=500)
        body = golden("taskmanager-busy")
        slot_template = body["allocatedSlots"][0]
        _fill_taskmanager(body, taskmanager)
        body["allocatedSlots"] = []
        for job_id in taskmanager.jobs:
            slot = copy.deepcopy(slot_template)
            slot["jobId"] = job_id
            body["allocatedSlots"].append(slot)
        return self._answer(request, body)


def _set_scheduler(entry: dict[str, Any], scheduler: str | None) -> None:
    if scheduler is None:
        entry.pop("schedulerType", None)
    else:
        entry["schedulerType"] = scheduler


def _fill_taskmanager(entry: dict[str, Any], taskmanager: FakeTaskManager) -> None:
    entry["id"] = taskmanager.taskmanager_id
    entry["slotsNumber"] = taskmanager.slots
    entry["freeSlots"] = taskmanager.slots - len(taskmanager.jobs)
