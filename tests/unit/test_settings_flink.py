"""RmdSettings: the Flink follower's keys (rmd.flink.*)."""

from __future__ import annotations

import pytest

from rmd.config.settings import KNOWN_RMD_KEYS
from rmd.daemon import allocator_settings
from tests.unit.test_settings import error_for, from_values


def test_defaults_follow_no_flink() -> None:
    s = from_values({})
    assert s.flink_rest_url is None
    assert s.flink_poll_interval == 0.5
    assert s.flink_usage_poll_interval == 2.0
    assert s.flink_request_timeout == 5.0


def test_keys_are_read() -> None:
    s = from_values(
        {
            "rmd.flink.rest-url": "http://localhost:8081/",
            "rmd.flink.poll-interval": "250 ms",
            "rmd.flink.usage-poll-interval": "10 s",
            "rmd.flink.request-timeout": "3 s",
        }
    )
    assert s.flink_rest_url == "http://localhost:8081"
    assert s.flink_poll_interval == 0.25
    assert s.flink_usage_poll_interval == 10.0
    assert s.flink_request_timeout == 3.0
    assert s.describe()["flink_poll_interval"] == "250 ms"
    assert s.describe()["flink_usage_poll_interval"] == "10 s"


def test_the_keys_are_known() -> None:
    assert {
        "rmd.flink.rest-url",
        "rmd.flink.poll-interval",
        "rmd.flink.usage-poll-interval",
        "rmd.flink.request-timeout",
    } <= KNOWN_RMD_KEYS


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "rmd.flink.rest-url",
            "localhost:8081",
            "rmd.flink.rest-url: 'localhost:8081' is not an http(s) URL; expected the "
            "JobManager's REST endpoint, e.g. 'http://localhost:8081'",
        ),
        (
            "rmd.flink.rest-url",
            "http://localhost:80810",
            "rmd.flink.rest-url: 'http://localhost:80810' has an invalid port; "
            "expected e.g. 'http://localhost:8081'",
        ),
        (
            "rmd.flink.poll-interval",
            "0 s",
            "rmd.flink.poll-interval: '0 s' is zero; expected a positive duration, e.g. '30 s'",
        ),
    ],
)
def test_validation_messages(key: str, value: str, message: str) -> None:
    error = error_for({key: value})
    assert str(error) == message
    assert error.key == key


def test_a_misspelt_key_suggests_the_right_one() -> None:
    error = error_for({"rmd.flink.rest-uri": "http://localhost:8081"})
    assert "did you mean 'rmd.flink.rest-url'?" in str(error)


def test_following_flink_turns_the_release_gate_on() -> None:
    assert not allocator_settings(from_values({})).external_usage_gate
    following = from_values({"rmd.flink.rest-url": "http://localhost:8081"})
    assert allocator_settings(following).external_usage_gate
