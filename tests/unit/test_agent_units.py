"""The agent's pure parts: environment, back-off, answer classification, command line."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmd.agent.child import exit_code_of
from rmd.agent.cli import UsageError, parse_taskmanager_args, run_taskmanager
from rmd.agent.client import (
    Accepted,
    Refused,
    Rejected,
    Unavailable,
    Unknown,
    answer_for,
    parse_retry_after,
)
from rmd.agent.exit_codes import EXIT_USAGE
from rmd.agent.settings import AgentEnvironmentError, settings_from_env
from rmd.config import agent_env
from rmd.retry import Backoff

GOOD_ENV = {
    agent_env.POD_NAME: "flink-taskmanager-1-1",
    agent_env.POD_IP: "10.0.0.7",
    agent_env.RESOURCEMANAGER_URL: "http://flink.default.svc:8090/",
    agent_env.TASKMANAGER_SLOTS: "4",
    agent_env.TASKMANAGER_PORT: "6122",
}

# ------------------------------------------------------------------------------ environment


def test_settings_from_a_complete_environment() -> None:
    settings = settings_from_env({**GOOD_ENV, agent_env.AUTH_TOKEN: "s3cret"})

    assert settings.taskmanager_id == "flink-taskmanager-1-1"
    assert settings.address == "10.0.0.7:6122"
    assert settings.slots == 4
    assert settings.resourcemanager_url == "http://flink.default.svc:8090"
    assert settings.heartbeat_interval == 10.0
    assert settings.auth_token == "s3cret"


def test_optional_variables_and_ipv6_address() -> None:
    settings = settings_from_env(
        {**GOOD_ENV, agent_env.POD_IP: "fd00::7", agent_env.HEARTBEAT_INTERVAL: "0.5"}
    )

    assert settings.address == "[fd00::7]:6122"
    assert settings.heartbeat_interval == 0.5
    assert settings.auth_token is None


@pytest.mark.parametrize("name", sorted(GOOD_ENV))
def test_a_missing_variable_is_named(name: str) -> None:
    env = {key: value for key, value in GOOD_ENV.items() if key != name}

    with pytest.raises(AgentEnvironmentError, match=name):
        settings_from_env(env)


def test_all_missing_variables_are_named_in_one_message() -> None:
    with pytest.raises(AgentEnvironmentError) as caught:
        settings_from_env({agent_env.POD_NAME: "  "})

    message = str(caught.value)
    assert "\n" not in message
    for name in (agent_env.POD_NAME, agent_env.POD_IP, agent_env.TASKMANAGER_PORT):
        assert name in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (agent_env.TASKMANAGER_SLOTS, "0"),
        (agent_env.TASKMANAGER_SLOTS, "four"),
        (agent_env.TASKMANAGER_PORT, "70000"),
        (agent_env.HEARTBEAT_INTERVAL, "-1"),
        (agent_env.HEARTBEAT_INTERVAL, "nan"),
        (agent_env.RESOURCEMANAGER_URL, "flink.default.svc:8090"),
        (agent_env.RESOURCEMANAGER_URL, "ftp://flink:21"),
        (agent_env.RESOURCEMANAGER_URL, "http://flink:notaport"),
    ],
)
def test_a_malformed_variable_is_named_with_its_value(name: str, value: str) -> None:
    with pytest.raises(AgentEnvironmentError, match=name) as caught:
        settings_from_env({**GOOD_ENV, name: value})

    assert repr(value) in str(caught.value) or value in str(caught.value)


def test_cli_reports_missing_environment_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in GOOD_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(agent_env.POD_NAME, "flink-taskmanager-1-1")

    code = run_taskmanager(["--", "true"])

    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.count("\n") == 1
    assert agent_env.POD_IP in err
    assert agent_env.RESOURCEMANAGER_URL in err
    assert agent_env.POD_NAME not in err


# ------------------------------------------------------------------------------ command line


def test_command_after_double_dash_keeps_its_own_options() -> None:
    args = parse_taskmanager_args(["--grace-period", "5", "--", "java", "--help", "-Xmx1g"])

    assert args.grace_period == 5.0
    assert args.command == ("java", "--help", "-Xmx1g")


def test_command_without_double_dash_and_no_command() -> None:
    assert parse_taskmanager_args(["taskmanager.sh", "start"]).command == (
        "taskmanager.sh",
        "start",
    )
    assert parse_taskmanager_args(["--grace-period=1.5"]).grace_period == 1.5
    assert parse_taskmanager_args([]).command == ()


@pytest.mark.parametrize(
    "argv", [["--bogus"], ["--grace-period"], ["--grace-period", "soon"], ["--grace-period=-1"]]
)
def test_bad_command_lines_are_refused(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_taskmanager_args(argv)


def test_cli_bad_option_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_taskmanager(["--bogus"]) == EXIT_USAGE
    assert "usage: rmd taskmanager" in capsys.readouterr().err


# ------------------------------------------------------------------------------ back-off


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    pick=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_backoff_delay_stays_between_floor_and_ceiling(attempt: int, pick: float) -> None:
    policy = Backoff(base=0.5, cap=30.0, floor=0.05)

    delay = policy.delay(attempt, uniform=lambda: pick)

    assert policy.floor <= delay <= policy.ceiling(attempt) <= policy.cap


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    policy = Backoff(base=0.5, cap=30.0)

    ceilings = [policy.ceiling(attempt) for attempt in range(1, 10)]

    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backoff_rejects_inconsistent_bounds() -> None:
    with pytest.raises(ValueError, match="floor"):
        Backoff(base=1.0, cap=0.5)


# ------------------------------------------------------------------------------ answers

NOW = 1_700_000_000.0


def test_retry_after_in_seconds_and_as_http_date() -> None:
    date = format_datetime(datetime.fromtimestamp(NOW + 42, tz=UTC), usegmt=True)

    assert parse_retry_after("7", now_wall=NOW) == 7.0
    assert parse_retry_after(date, now_wall=NOW) == pytest.approx(42.0)
    assert parse_retry_after("-3", now_wall=NOW) == 0.0
    assert parse_retry_after("soon", now_wall=NOW) is None
    assert parse_retry_after("inf", now_wall=NOW) is None
    assert parse_retry_after(None, now_wall=NOW) is None


def _answer(status: int, text: str = "", retry_after: str | None = None) -> object:
    return answer_for(status=status, text=text, retry_after=retry_after, now_wall=NOW)


def test_answers_are_classified_by_status() -> None:
    view = '{"taskmanager_id": "tm", "state": "registered"}'
    gone = '{"status": 404, "title": "Not Found", "detail": "TaskManager tm is unknown."}'

    assert _answer(200, view) == Accepted(
        state="registered", view={"taskmanager_id": "tm", "state": "registered"}
    )
    assert _answer(204) == Accepted(state=None)
    assert _answer(404, gone) == Unknown("HTTP 404: TaskManager tm is unknown.", released=False)
    assert _answer(404, '{"detail": "TaskManager tm is being released"}') == Unknown(
        "HTTP 404: TaskManager tm is being released", released=True
    )
    assert _answer(401, '{"title": "Unauthorized"}') == Rejected(401, "HTTP 401: Unauthorized")
    assert _answer(422, "<html>bad</html>") == Rejected(422, "HTTP 422: <html>bad</html>")
    assert _answer(502, "") == Unavailable("HTTP 502")
    assert _answer(429, "", retry_after="3") == Unavailable("HTTP 429", retry_after=3.0)
    assert _answer(503, "", retry_after="2") == Unavailable("HTTP 503", retry_after=2.0)


def test_a_403_says_whether_the_taskmanager_is_being_released() -> None:
    releasing = (
        '{"status": 403, "detail": "TaskManager tm is being released; it may not register."}'
    )
    stranger = '{"status": 403, "detail": "tm was not created by this daemon."}'
    by_field = '{"status": 403, "detail": "no", "state": "releasing"}'

    assert _answer(403, releasing) == Refused(
        "HTTP 403: TaskManager tm is being released; it may not register.", released=True
    )
    assert _answer(403, stranger) == Refused(
        "HTTP 403: tm was not created by this daemon.", released=False
    )
    assert _answer(403, by_field) == Refused("HTTP 403: no", released=True)


# ------------------------------------------------------------------------------ exit codes


def test_exit_codes_of_the_supervised_command() -> None:
    assert exit_code_of(7, stop_requested=False) == 7
    assert exit_code_of(7, stop_requested=True) == 7
    assert exit_code_of(-signal.SIGTERM, stop_requested=True) == 0
    assert exit_code_of(-signal.SIGINT, stop_requested=True) == 0
    assert exit_code_of(-signal.SIGTERM, stop_requested=False) == 143
    assert exit_code_of(-signal.SIGKILL, stop_requested=True) == 137
