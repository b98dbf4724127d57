"""The TaskManager agent's life: register, heartbeat, supervise, and leave cleanly.

One agent is one coroutine: :func:`run_agent` keeps no process-wide state and installs no
signal handlers, so the node emulator can run hundreds of them in one process. Whoever runs
it ends it by setting ``stop`` (the CLI sets it on SIGTERM/SIGINT).

How it ends (exit codes in :mod:`rmd.agent.exit_codes`):

- ``stop`` set: the supervised command is stopped (SIGTERM, SIGKILL after the grace period),
  the agent deregisters (best effort) and returns 0, or the command's own exit code when it
  exited with one (128 + N when it had to be killed by signal N).
- the supervised command exits by itself: deregister (best effort), return its exit code.

When the command is Flink's TaskManager (``RMD_SUPERVISE_FLINK=true``) the agent registers
only once Flink's JobManager lists it (:mod:`rmd.agent.flink`), polling every
``AgentTiming.flink_poll_interval`` once the TaskManager's RPC port is open and, where
its log file is on its command line, once that log says it registered (or
``flink_log_grace`` after the port opened); before that, every ``flink_unopened_poll``.
A stop or the command's exit ends the wait. It keeps asking while it heartbeats (once per
heartbeat; every poll interval for a while after the daemon forgot the TaskManager, until
the JobManager says it does not know it, then once more when that has lasted): when the
JobManager answers that it does not know the TaskManager for
``AgentTiming.flink_forgotten_after`` (a JobManager restarted without high availability:
Flink's TaskManager would find the new one only after its heartbeat timeout, 50 s by
default), the agent restarts the TaskManager in the same pod, which then registers with the
new JobManager at once; rmd's pod and slots stay as they are.
- a heartbeat answer says ``"state": "releasing"`` (or is a 404 whose detail says the
  TaskManager is being released): the daemon is deleting the pod; stop the command, return 0.
- the daemon answers 403: log its detail, stop the command, return 0 when it says the
  TaskManager is being released, else :data:`EXIT_REFUSED`. 401 and other 4xx answers
  (repeating the call cannot help) end with :data:`EXIT_REJECTED`.

Heartbeats go over the heartbeat channel (one WebSocket, :mod:`rmd.agent.channel`, a frame per
heartbeat that the daemon does not answer) when the daemon has it, else over HTTP; whenever
the channel ends, one HTTP heartbeat follows at once and decides as below.

A 404 to a heartbeat means the daemon forgot the TaskManager (e.g. it restarted): the agent
registers again. An unreachable daemon, timeouts, 5xx, 408 and 429 are retried for ever with
exponential back-off and full jitter (429 and 503 honour ``Retry-After``), one log line per
failure.
"""

from __future__ import annotations

import asyncio
import enum
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import structlog
from structlog.typing import FilteringBoundLogger

from rmd.agent.channel import ChannelUnsupported, HeartbeatChannel, open_channel
from rmd.agent.child import SupervisedProcess, exit_code_of
from rmd.agent.client import (
    RELEASING,
    Accepted,
    Answer,
    Refused,
    Rejected,
    ResourceManagerClient,
    Unavailable,
    Unknown,
)
from rmd.agent.exit_codes import (
    EXIT_CANNOT_EXECUTE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_REJECTED,
    EXIT_USAGE,
)
from rmd.agent.flink import (
    FlinkAnswer,
    FlinkTaskManagerProbe,
    flink_rest_url,
    taskmanager_log_file,
)
from rmd.agent.settings import AgentEnvironmentError, AgentSettings, settings_from_env
from rmd.core.clock import Clock, SystemClock
from rmd.retry import Backoff, Failure, Pacing, RetryPolicy, retry

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentTiming:
    """How long the agent waits for things; the defaults suit a real cluster."""

    request_timeout: float = 5.0  # each register/heartbeat call, seconds
    deregister_timeout: float = 2.0  # the goodbye call on the way out is best effort
    grace_period: float = 20.0  # SIGTERM → SIGKILL for the supervised command (pod grace: 30)
    # Between failed calls: full jitter up to 0.5 s, 1 s, ... 30 s, never below 0.05 s (no
    # spin); a daemon's Retry-After exactly, cut to 300 s.
    backoff: Backoff = field(
        default_factory=lambda: Backoff(base=0.5, cap=30.0, floor=0.05, max_retry_after=300.0)
    )
    flink_poll_interval: float = 1.0  # asking Flink's JobManager whether the TaskManager is up
    # Before that: whether the TaskManager's RPC port is open yet (a local connect), this
    # often; the JobManager is asked only once it is, or every flink_unopened_poll regardless
    # (a TaskManager bound to another address than the pod's still gets registered).
    flink_port_poll_interval: float = 0.2
    flink_unopened_poll: float = 10.0
    # With the TaskManager's log file known, once the port is open the JobManager is asked
    # only when that log says the TaskManager registered (read every
    # flink_port_poll_interval), or after this long without it (a log without INFO lines).
    flink_log_grace: float = 3.0
    # Unknown to an answering JobManager (404) for this long once it was up: restart it.
    flink_forgotten_after: float = 5.0
    # While registered, Flink is asked once per heartbeat; every flink_poll_interval for this
    # long after registering again (the daemon forgot the TaskManager: the JobManager pod may
    # have restarted) and while the JobManager says it does not know the TaskManager.
    flink_close_watch: float = 120.0
    # Heartbeats over the heartbeat channel (a WebSocket, rmd.agent.channel) when the daemon
    # has it; HTTP heartbeats otherwise. Every ping_every-th heartbeat on it carries a ping.
    heartbeat_channel: bool = True
    channel_ping_every: int = 3
    # A daemon that answered the upgrade without a WebSocket (an older rmd: 404) is asked
    # again after this long (it may have been upgraded meanwhile).
    channel_unsupported_retry: float = 600.0


class Interruption(enum.Enum):
    """Something outside the request loop that ends it."""

    STOP = "stop"  # the stop event was set
    COMMAND_EXITED = "command-exited"  # the supervised command ended by itself


@dataclass(frozen=True, slots=True)
class ReleasedByDaemon:
    """The daemon answered that it releases this TaskManager."""

    call: str  # the call it answered: register or heartbeat
    detail: str | None = None  # its words, when it gave some


Ending = Interruption | ReleasedByDaemon | Refused | Rejected


async def run_agent(
    *,
    env: Mapping[str, str],
    command: Sequence[str] | None,
    settings: AgentSettings | None = None,
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
    uniform: Callable[[], float] | None = None,
    session: aiohttp.ClientSession | None = None,
    log: FilteringBoundLogger | None = None,
    timing: AgentTiming | None = None,
    started: SupervisedProcess | None = None,
) -> int:
    """Run one TaskManager agent configured by ``env``; return its exit code.

    ``settings`` are read from ``env`` unless given (the CLI reads them first). ``command``
    (may be None or empty) is started and supervised; it gets ``env`` as its environment.
    ``started``: ``command`` already running, started by the caller (the CLI starts it
    before it loads the agent's HTTP client); it is supervised as if started here, and
    killed if the environment turns out unusable.
    ``sleep`` and ``uniform`` (a number in [0, 1) for back-off jitter) replace the real ones
    in tests; ``session`` may be shared by many agents (it is not closed). A bad environment
    is logged as one ``agent.environment_invalid`` event: exit code 2.
    """
    logger: FilteringBoundLogger = log if log is not None else structlog.get_logger("rmd.agent")
    chosen_timing = timing if timing is not None else AgentTiming()
    chosen_clock = clock if clock is not None else SystemClock()
    rest_url: str | None = None
    try:
        if settings is None:
            settings = settings_from_env(env)
        if settings.supervise_flink and command:
            rest_url = flink_rest_url(env)
    except AgentEnvironmentError as error:
        logger.error("agent.environment_invalid", error=str(error))
        if started is not None:
            started.kill()
            await started.wait()
        return EXIT_USAGE
    async with _client_session(session) as usable_session:
        client = ResourceManagerClient(
            session=usable_session,
            base_url=settings.resourcemanager_url,
            auth_token=settings.auth_token,
            request_timeout=chosen_timing.request_timeout,
            clock=chosen_clock,
        )
        agent = _Agent(
            settings=settings,
            client=client,
            stop=stop if stop is not None else asyncio.Event(),
            clock=chosen_clock,
            sleep=sleep if sleep is not None else asyncio.sleep,
            uniform=uniform if uniform is not None else random.random,
            log=logger.bind(taskmanager_id=settings.taskmanager_id),
            timing=chosen_timing,
            flink_probe=(
                None
                if rest_url is None
                else FlinkTaskManagerProbe(
                    session=usable_session,
                    rest_url=rest_url,
                    resource_id=settings.taskmanager_id,
                    request_timeout=chosen_timing.request_timeout,
                    rpc_address=(settings.pod_ip, settings.port),
                    log_file=taskmanager_log_file(command or ()),
                )
            ),
        )
        return await agent.run(command=tuple(command or ()), env=env, started=started)


@asynccontextmanager
async def _client_session(
    shared: aiohttp.ClientSession | None,
) -> AsyncIterator[aiohttp.ClientSession]:
    if shared is not None:
        yield shared
        return
    async with aiohttp.ClientSession() as own:
        yield own


class _Agent:
    """One run of the agent. Not reusable."""

    def __init__(
        self,
        *,
        settings: AgentSettings,
        client: ResourceManagerClient,
        stop: asyncio.Event,
        clock: Clock,
        sleep: Sleep,
        uniform: Callable[[], float],
        log: FilteringBoundLogger,
        timing: AgentTiming,
        flink_probe: FlinkTaskManagerProbe | None = None,
    ) -> None:
        self._settings = settings
        self._flink_probe = flink_probe
        self._client = client
        self._stop = stop
        self._clock = clock
        self._sleep = sleep
        self._uniform = uniform
        self._log = log
        self._timing = timing
        self._child: SupervisedProcess | None = None
        self._child_exit: asyncio.Future[Any] | None = None
        self._waiters: list[asyncio.Future[Any]] = []
        self._command: Sequence[str] = ()
        self._env: Mapping[str, str] = {}
        self._forgotten_since: float | None = None
        self._restarted_unlisted = False  # restarted; not listed by Flink since
        # the running TaskManager's RPC port was seen open (reset when it is restarted), and
        # when Flink's JobManager was last asked about it
        self._rpc_port_seen_open = False
        self._rpc_port_open_at = float("-inf")
        self._registration_seen = False  # its log said it registered (reset with the port)
        self._asking_closely = False  # asked every flink_poll_interval (else: port polling)
        self._flink_asked_at = float("-inf")
        self._restarted_at = float("-inf")
        self._close_watch_until = float("-inf")
        self._channel_at = float("-inf")  # when the heartbeat channel may be tried (again)

    async def run(
        self,
        *,
        command: Sequence[str],
        env: Mapping[str, str],
        started: SupervisedProcess | None = None,
    ) -> int:
        self._log.info(
            "agent.starting",
            resourcemanager_url=self._settings.resourcemanager_url,
            address=self._settings.address,
            slots=self._settings.slots,
            heartbeat_interval=self._settings.heartbeat_interval,
            command=list(command) or None,
        )
        self._command, self._env = command, env
        if started is not None:
            self._child = started
            self._log.info("agent.command_started", command=list(command), pid=started.pid)
        elif command:
            try:
                self._child = await SupervisedProcess.start(command, env=env)
            except OSError as error:
                code = (
                    EXIT_NOT_FOUND if isinstance(error, FileNotFoundError) else EXIT_CANNOT_EXECUTE
                )
                self._log.error(
                    "agent.command_not_started",
                    command=list(command),
                    error=f"{type(error).__name__}: {error}",
                    exit_code=code,
                )
                return code
            self._log.info("agent.command_started", command=list(command), pid=self._child.pid)
        self._waiters.append(asyncio.ensure_future(self._stop.wait()))
        if self._child is not None:
            self._watch_child()
        try:
            interrupted = await self._until_flink_is_up()
            ending = interrupted if interrupted is not None else await self._serve()
            return await self._finish(ending)
        finally:
            for waiter in self._waiters:
                waiter.cancel()
            await asyncio.gather(*self._waiters, return_exceptions=True)
            if self._child is not None and self._child.returncode is None:
                self._child.kill()  # only when cancelled: never leave the command behind

    # ------------------------------------------------------------------ the request loop

    async def _serve(self) -> Ending:
        started = self._clock.monotonic()
        registrations = 0
        while True:
            answer = await self._until_answered("register", self._register_once)
            if not isinstance(answer, Accepted):
                return _ending_of(answer)
            if answer.state == RELEASING:
                return ReleasedByDaemon("register")
            registrations += 1
            if registrations > 1:
                self._close_watch_until = self._clock.monotonic() + self._timing.flink_close_watch
            self._log.info(
                "agent.registered",
                address=self._settings.address,
                slots=self._settings.slots,
                after_seconds=round(self._clock.monotonic() - started, 3),
            )
            ending = await self._heartbeat_until_forgotten()
            if ending is not None:
                return ending

    async def _until_flink_is_up(self) -> Interruption | None:
        """With Flink's TaskManager as the command: wait until its JobManager lists it."""
        probe = self._flink_probe
        if probe is None or self._child is None:
            return None
        started = self._flink_asked_at = self._clock.monotonic()
        self._log.info("agent.waiting_for_flink", rest_url=probe.rest_url)
        while True:
            ask = await self._time_to_ask_flink(probe, since=started)
            if isinstance(ask, Interruption):
                return ask
            if ask:
                listed = await self._race(probe.listed)
                if isinstance(listed, Interruption):
                    return listed
                if listed:
                    self._log.info(
                        "agent.flink_taskmanager_up",
                        after_seconds=round(self._clock.monotonic() - started, 3),
                    )
                    return None
            interruption = await self._pause(
                self._timing.flink_poll_interval
                if self._asking_closely
                else self._timing.flink_port_poll_interval
            )
            if interruption is not None:
                return interruption

    async def _time_to_ask_flink(
        self, probe: FlinkTaskManagerProbe, *, since: float
    ) -> bool | Interruption:
        """Whether to ask the JobManager about a TaskManager not listed yet: once its RPC
        port has been open (it registers only after that) and, where its log file is known,
        its log says it registered or flink_log_grace has passed; else every
        flink_unopened_poll. Asking is noted."""
        if not self._rpc_port_seen_open:
            opened = await self._race(probe.rpc_port_open)
            if isinstance(opened, Interruption):
                return opened
            if opened:
                self._rpc_port_seen_open = True
                self._rpc_port_open_at = self._clock.monotonic()
                self._log.info(
                    "agent.flink_taskmanager_port_open",
                    after_seconds=round(self._rpc_port_open_at - since, 3),
                )
        now = self._clock.monotonic()
        self._asking_closely = self._rpc_port_seen_open and self._registration_awaited(
            probe, now=now, since=since
        )
        due = now - self._flink_asked_at >= self._timing.flink_unopened_poll
        if self._asking_closely or due:
            self._flink_asked_at = now
            return True
        return False

    def _registration_awaited(
        self, probe: FlinkTaskManagerProbe, *, now: float, since: float
    ) -> bool:
        """With the port open: whether the TaskManager may have registered by now."""
        if probe.log_file is None or self._registration_seen:
            return True
        if probe.registration_logged():
            self._registration_seen = True
            self._log.info(
                "agent.flink_taskmanager_registration_logged",
                after_seconds=round(now - since, 3),
            )
            return True
        return now - self._rpc_port_open_at >= self._timing.flink_log_grace

    def _watch_child(self) -> None:
        assert self._child is not None
        self._child_exit = asyncio.ensure_future(self._child.wait())
        self._waiters.append(self._child_exit)

    async def _pause_watching_flink(self, seconds: float) -> Interruption | None:
        """:meth:`_pause` for ``seconds``; with Flink's TaskManager as the command, asking its
        JobManager every poll interval meanwhile and restarting a TaskManager it forgot."""
        probe = self._flink_probe
        if probe is None or self._child is None:
            return await self._pause(seconds)
        until = self._clock.monotonic() + seconds
        while (left := until - self._clock.monotonic()) > 0:
            now = self._clock.monotonic()
            if self._forgotten_since is not None:
                # Unknown once: the answer flink_forgotten_after later decides. Asking in
                # between changes nothing and costs an ERROR in Flink's log each time.
                decides_at = self._forgotten_since + self._timing.flink_forgotten_after
                step = max(decides_at - now, self._timing.flink_port_poll_interval)
            elif now < self._close_watch_until:
                step = self._timing.flink_poll_interval
            else:
                step = left
            interruption = await self._pause(min(left, step))
            if interruption is not None:
                return interruption
            if self._restarted_unlisted:  # a restarted TaskManager: asked once its port is open
                ask = await self._time_to_ask_flink(probe, since=self._restarted_at)
                if isinstance(ask, Interruption):
                    return ask
                if not ask:
                    continue
            status = await self._race(probe.answer)
            if isinstance(status, Interruption):
                return status
            now = self._clock.monotonic()
            if status is FlinkAnswer.LISTED:
                self._forgotten_since = None
                self._restarted_unlisted = False
            if status is not FlinkAnswer.UNKNOWN or self._restarted_unlisted:
                continue  # no answer, or a restarted TaskManager still starting: wait
            if self._forgotten_since is None:
                self._forgotten_since = now
            elif now - self._forgotten_since >= self._timing.flink_forgotten_after:
                interruption = await self._restart_command(unknown_for=now - self._forgotten_since)
                if interruption is not None:
                    return interruption
        return None

    async def _restart_command(self, *, unknown_for: float) -> Interruption | None:
        """Stop the supervised TaskManager and start it again (same command and env)."""
        assert self._child is not None
        assert self._child_exit is not None
        self._log.warning(
            "agent.flink_forgot_taskmanager",
            unknown_for_seconds=round(unknown_for, 3),
            action="restarting the TaskManager",
        )
        self._waiters.remove(self._child_exit)
        self._child_exit.cancel()
        await self._child.terminate(grace_period=self._timing.grace_period)
        self._forgotten_since = None
        if self._stop.is_set():
            return Interruption.STOP
        try:
            self._child = await SupervisedProcess.start(self._command, env=self._env)
        except OSError as error:
            self._log.error("agent.command_not_restarted", error=f"{type(error).__name__}: {error}")
            return Interruption.COMMAND_EXITED  # the old one has exited: end as it would
        self._watch_child()
        self._restarted_unlisted = True  # once only, until Flink lists the new one
        self._rpc_port_seen_open = self._registration_seen = self._asking_closely = False
        self._restarted_at = self._flink_asked_at = self._clock.monotonic()
        self._log.info("agent.command_started", command=list(self._command), pid=self._child.pid)
        return None

    async def _heartbeat_until_forgotten(self) -> Ending | None:
        """Heartbeat every interval; None when the daemon no longer knows the TaskManager.

        Over the heartbeat channel while the daemon has one; an HTTP heartbeat at once
        whenever the channel ends (it finds out who is there now), then HTTP heartbeats until
        the channel is tried again (one interval later; after an upgrade refused without a
        WebSocket, ``channel_unsupported_retry`` later)."""
        while True:
            if self._timing.heartbeat_channel and self._clock.monotonic() >= self._channel_at:
                verdict = await self._heartbeat_over_channel()
                if verdict is not _CARRY_ON:
                    return verdict
            else:
                interruption = await self._pause_watching_flink(self._settings.heartbeat_interval)
                if interruption is not None:
                    return interruption
            answer = await self._until_answered("heartbeat", self._heartbeat_once)
            verdict = self._verdict(answer)
            if verdict is not _CARRY_ON:
                return verdict

    def _verdict(
        self, answer: Accepted | Unknown | Refused | Rejected | Interruption
    ) -> Ending | _CarryOn | None:
        """What a heartbeat's answer means: carry on, register again (None), or the end."""
        if isinstance(answer, Unknown) and answer.released:
            return ReleasedByDaemon("heartbeat", answer.detail)
        if isinstance(answer, Unknown):
            self._log.warning(
                "agent.unknown_to_daemon", detail=answer.detail, action="registering again"
            )
            return None
        if not isinstance(answer, Accepted):
            return answer
        if answer.state == RELEASING:
            return ReleasedByDaemon("heartbeat")
        return _CARRY_ON

    async def _heartbeat_over_channel(self) -> Ending | _CarryOn | None:
        """Open the channel and heartbeat on it; :data:`_CARRY_ON` when it ends in a way an
        HTTP heartbeat must look into (or was never opened)."""
        interval = self._settings.heartbeat_interval
        self._channel_at = self._clock.monotonic() + interval  # not again before that
        opened = await self._race(
            lambda: open_channel(
                self._client.session,
                base_url=self._client.target_url,
                taskmanager_id=self._settings.taskmanager_id,
                headers=self._client.auth_headers,
                timeout=self._timing.request_timeout,
                clock=self._clock,
                ping_every=self._timing.channel_ping_every,
            )
        )
        if isinstance(opened, Interruption):
            return opened
        if isinstance(opened, ChannelUnsupported):
            self._channel_at = self._clock.monotonic() + self._timing.channel_unsupported_retry
            self._log.info(
                "agent.heartbeat_channel_unsupported",
                detail=opened.detail,
                action="HTTP heartbeats",
                retry_seconds=self._timing.channel_unsupported_retry,
            )
            return _CARRY_ON
        if not isinstance(opened, HeartbeatChannel):
            if not isinstance(opened, Unavailable):
                return self._verdict(opened)
            self._log.warning("agent.heartbeat_channel_failed", error=opened.error)
            return _CARRY_ON
        self._log.info("agent.heartbeat_channel_open")
        try:
            while True:
                news = await self._pause_on_channel(opened, interval)
                if isinstance(news, Interruption):
                    return news
                if news is None:
                    await opened.beat()
                    continue
                if isinstance(news, Unavailable):
                    self._log.warning(
                        "agent.heartbeat_channel_ended", error=news.error, action="HTTP heartbeat"
                    )
                    return _CARRY_ON
                return self._verdict(news)
        finally:
            await opened.close()

    async def _pause_on_channel(
        self, channel: HeartbeatChannel, seconds: float
    ) -> Interruption | Answer | None:
        """:meth:`_pause_watching_flink` for ``seconds``, cut short by what ends the channel
        (its answer); None when the time is up."""
        pause = asyncio.ensure_future(self._pause_watching_flink(seconds))
        either: list[asyncio.Future[Any]] = [pause, channel.news]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if pause.done():
            return pause.result()
        pause.cancel()
        try:
            await pause
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        return channel.news.result()

    async def _register_once(self) -> Answer:
        return await self._client.register(
            self._settings.taskmanager_id,
            address=self._settings.address,
            slots=self._settings.slots,
        )

    async def _heartbeat_once(self) -> Answer:
        return await self._client.heartbeat(self._settings.taskmanager_id)

    async def _until_answered(
        self, call: str, send: Callable[[], Awaitable[Answer]]
    ) -> Accepted | Unknown | Refused | Rejected | Interruption:
        """Send until the daemon gives a real answer; back off between failures."""

        async def attempt() -> Accepted | Unknown | Refused | Rejected | Interruption:
            answer = await self._race(send)
            if isinstance(answer, Unavailable):
                raise _DaemonUnavailable(answer)
            return answer

        def report(failure: Failure) -> None:
            if failure.delay is None:
                return  # not an unanswered call: a bug, raised as it is
            unavailable = _unavailable(failure.error)
            self._log.warning(
                f"agent.{call}_failed",
                attempt=failure.attempt,
                delay=round(failure.delay, 3),
                error=unavailable.error,
                retry_after=unavailable.retry_after,
            )

        try:
            return await retry(
                attempt,
                policy=RetryPolicy(backoff=self._timing.backoff),
                retriable=lambda error: isinstance(error, _DaemonUnavailable),
                retry_after=lambda error: _unavailable(error).retry_after,
                on_failure=report,
                pacing=Pacing(
                    sleep=self._pause_or_stop,
                    uniform=self._uniform,
                    monotonic=self._clock.monotonic,
                ),
            )
        except _Interrupted as interrupted:
            return interrupted.interruption

    # ------------------------------------------------------------------ interruptible waits

    def _interruption(self) -> Interruption | None:
        if self._stop.is_set():
            return Interruption.STOP
        if self._child is not None and self._child.returncode is not None:
            return Interruption.COMMAND_EXITED
        return None

    async def _race(self, operation: Callable[[], Awaitable[T]]) -> T | Interruption:
        """Run ``operation`` unless, or until, a stop or the command's exit interrupts it."""
        interruption = self._interruption()
        if interruption is not None:
            return interruption
        task = asyncio.ensure_future(operation())
        await asyncio.wait([task, *self._waiters], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        interruption = self._interruption()
        assert interruption is not None, "a waiter finished, so something interrupted"
        return interruption

    async def _pause(self, seconds: float) -> Interruption | None:
        outcome = await self._race(lambda: self._sleep(seconds))
        return outcome if isinstance(outcome, Interruption) else None

    async def _pause_or_stop(self, seconds: float) -> None:
        """:meth:`_pause` for the retry loop: an interruption ends the loop."""
        interruption = await self._pause(seconds)
        if interruption is not None:
            raise _Interrupted(interruption)

    # ------------------------------------------------------------------ the way out

    async def _finish(self, ending: Ending) -> int:
        if ending is Interruption.STOP:
            self._log.info("agent.stopping", reason="stop requested")
            returncode = await self._stop_command()
            await self._deregister()
            return EXIT_OK if returncode is None else exit_code_of(returncode, stop_requested=True)
        if ending is Interruption.COMMAND_EXITED:
            assert self._child is not None
            assert self._child.returncode is not None
            returncode = self._child.returncode
            code = exit_code_of(returncode, stop_requested=False)
            self._log.info("agent.command_exited", returncode=returncode, exit_code=code)
            await self._deregister()
            return code
        if isinstance(ending, ReleasedByDaemon):
            self._log.info(
                "agent.released", answer_to=ending.call, detail=ending.detail, action="stopping"
            )
            await self._stop_command()
            return EXIT_OK
        if isinstance(ending, Refused):
            if ending.released:
                self._log.info("agent.refused", detail=ending.detail, released=True)
            else:
                self._log.error("agent.refused", detail=ending.detail, released=False)
            await self._stop_command()
            return EXIT_OK if ending.released else EXIT_REFUSED
        self._log.error(
            "agent.rejected",
            status=ending.status,
            detail=ending.detail,
            hint="check the daemon URL and the auth token",
        )
        await self._stop_command()
        return EXIT_REJECTED

    async def _stop_command(self) -> int | None:
        """Stop the supervised command (if any); its return code."""
        if self._child is None:
            return None
        already = self._child.returncode
        returncode = await self._child.terminate(grace_period=self._timing.grace_period)
        if already is not None:
            self._log.info("agent.command_exited", returncode=returncode)
        elif returncode == -signal.SIGKILL:
            self._log.warning(
                "agent.command_killed",
                returncode=returncode,
                reason=f"still running {self._timing.grace_period:g} s after SIGTERM",
            )
        else:
            self._log.info("agent.command_stopped", returncode=returncode)
        return returncode

    async def _deregister(self) -> None:
        answer = await self._client.deregister(
            self._settings.taskmanager_id, time_limit=self._timing.deregister_timeout
        )
        if isinstance(answer, Accepted | Unknown):
            self._log.info("agent.deregistered", known=isinstance(answer, Accepted))
            return
        self._log.warning("agent.deregister_failed", error=_describe(answer))


class _CarryOn(enum.Enum):
    CARRY_ON = "carry on"


_CARRY_ON = _CarryOn.CARRY_ON  # a heartbeat's answer that changes nothing


class _DaemonUnavailable(Exception):
    """A call the daemon did not answer (or answered 5xx, 408, 429): worth another try."""

    def __init__(self, answer: Unavailable) -> None:
        super().__init__(answer.error)
        self.answer = answer


class _Interrupted(Exception):
    """A stop or the command's exit cut a back-off short."""

    def __init__(self, interruption: Interruption) -> None:
        super().__init__(interruption.value)
        self.interruption = interruption


def _unavailable(error: Exception) -> Unavailable:
    assert isinstance(error, _DaemonUnavailable), "only unanswered calls are retried"
    return error.answer


def _ending_of(answer: Unknown | Refused | Rejected | Interruption) -> Ending:
    """The register call's non-success answers; a 404 there means a wrong URL, not a restart."""
    if isinstance(answer, Unknown):
        return Rejected(404, answer.detail)
    return answer


def _describe(answer: Answer) -> str:
    if isinstance(answer, Unavailable):
        return answer.error
    if isinstance(answer, Refused | Rejected | Unknown):
        return answer.detail
    return f"state {answer.state}"
