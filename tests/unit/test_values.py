"""Value parsers: Flink's syntax for durations, memory sizes, booleans, lists and maps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmd.config.values import (
    format_duration,
    format_memory_size,
    parse_bool,
    parse_duration,
    parse_list,
    parse_map,
    parse_memory_size,
    split_outside_quotes,
)

# ---------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30 s", 30.0),
        ("30s", 30.0),
        ("  30   s  ", 30.0),
        ("5 min", 300.0),
        ("5m", 300.0),
        ("5 minutes", 300.0),
        ("1 minute", 60.0),
        ("100ms", 0.1),
        ("100 milli", 0.1),
        ("100 millis", 0.1),
        ("100 millisecond", 0.1),
        ("100 milliseconds", 0.1),
        ("1 h", 3600.0),
        ("2 hours", 7200.0),
        ("2 d", 172800.0),
        ("1 day", 86400.0),
        ("3 days", 259200.0),
        ("7 sec", 7.0),
        ("7 secs", 7.0),
        ("7 second", 7.0),
        ("7 seconds", 7.0),
        ("500 us", 500e-6),
        ("500 µs", 500e-6),
        ("500 micros", 500e-6),
        ("500 microseconds", 500e-6),
        ("10 ns", 10e-9),
        ("10 nanos", 10e-9),
        ("10 nanoseconds", 10e-9),
        ("1 MIN", 60.0),
        ("1 S", 1.0),
        ("1 Ms", 0.001),
        ("0 s", 0.0),
        ("30000", 30.0),  # bare: milliseconds by default
    ],
)
def test_parse_duration_accepts_flink_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_bare_duration_uses_the_default_unit() -> None:
    assert parse_duration("50000") == pytest.approx(50.0)
    assert parse_duration("30", default_unit="s") == 30.0
    assert parse_duration("2", default_unit="min") == 120.0


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("30 parsecs", "unknown time unit 'parsecs'"),
        ("", "empty value"),
        ("   ", "empty value"),
        ("s", "is not a duration"),
        ("-100 ms", "negative"),
        ("+5 s", "is not a duration"),
        ("1.5 s", "only whole numbers"),
        ("16 16 ms", "unknown time unit '16 ms'"),
        ("100000000000000000000000 ms", "too large"),
        ("PT30S", "is not a duration"),
    ],
)
def test_parse_duration_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="duration") as caught:
        parse_duration(text)
    assert fragment in str(caught.value)


def test_duration_error_shows_examples() -> None:
    with pytest.raises(ValueError, match=r"e\.g\. '30 s', '5 min', '100ms'"):
        parse_duration("30 parsecs")


def test_unknown_default_time_unit_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="default time unit"):
        parse_duration("5", default_unit="fortnight")


# ---------------------------------------------------------------------------- memory


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1728m", 1728 * 2**20),
        ("1728 M", 1728 * 2**20),
        ("4g", 4 * 2**30),
        ("4 GB", 4 * 2**30),
        ("1024 mb", 2**30),
        ("1 gb", 2**30),
        ("512k", 512 * 1024),
        ("512 kb", 512 * 1024),
        ("1t", 2**40),
        ("1 tb", 2**40),
        ("2 kibibytes", 2048),
        ("2 mebibytes", 2 * 2**20),
        ("2 gibibytes", 2 * 2**30),
        ("2 tebibytes", 2 * 2**40),
        ("100", 100),
        ("100b", 100),
        ("100 bytes", 100),
        ("0", 0),
    ],
)
def test_parse_memory_size_accepts_flink_forms(text: str, size: int) -> None:
    assert parse_memory_size(text) == size


def test_bare_memory_size_uses_the_default_unit() -> None:
    assert parse_memory_size("64", default_unit="m") == 64 * 2**20


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("12 parsecs", "unknown unit 'parsecs'"),
        ("-1g", "negative"),
        ("1.5g", "only whole numbers"),
        ("g", "is not a memory size"),
        ("", "empty value"),
        ("1 pb", "unknown unit 'pb'"),
        ("9999999999 t", "too large"),
    ],
)
def test_parse_memory_size_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="memory size") as caught:
        parse_memory_size(text)
    assert fragment in str(caught.value)


# ---------------------------------------------------------------------------- booleans


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("TRUE", True), (" True ", True), ("false", False), ("False", False)],
)
def test_parse_bool_accepts_true_and_false(text: str, value: bool) -> None:
    assert parse_bool(text) is value


@pytest.mark.parametrize("text", ["yes", "no", "1", "0", "on", "", "truthy"])
def test_parse_bool_rejects_everything_else(text: str) -> None:
    with pytest.raises(ValueError, match="expected true or false"):
        parse_bool(text)


# ---------------------------------------------------------------------------- lists and maps


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ("a;b;c", ["a", "b", "c"]),
        (" a ; b ;c ", ["a", "b", "c"]),
        ("a;;b;", ["a", "b"]),
        ("", []),
        ("single", ["single"]),
        ("'a;b';c", ["a;b", "c"]),
        ("'it''s';x", ["it's", "x"]),
    ],
)
def test_parse_list(text: str, items: list[str]) -> None:
    assert parse_list(text) == items


def test_parse_list_with_another_separator() -> None:
    assert parse_list("a,b", separator=",") == ["a", "b"]


def test_parse_list_rejects_an_unclosed_quote() -> None:
    with pytest.raises(ValueError, match="unclosed ' quote"):
        parse_list("'a;b")


@pytest.mark.parametrize(
    ("text", "mapping"),
    [
        ("k1:v1,k2:v2", {"k1": "v1", "k2": "v2"}),
        (" k1 : v1 , k2:v2 ", {"k1": "v1", "k2": "v2"}),
        ("", {}),
        ("k:", {"k": ""}),
        ("url:http://x:80/y", {"url": "http://x:80/y"}),
        ("'a,b':c", {"a,b": "c"}),
        ("a:'x,y',b:z", {"a": "x,y", "b": "z"}),
        ("app.kubernetes.io/name:flink", {"app.kubernetes.io/name": "flink"}),
    ],
)
def test_parse_map(text: str, mapping: dict[str, str]) -> None:
    assert parse_map(text) == mapping


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("k1:v1,k2", "entry 'k2' has no ':'"), (":v", "empty key"), ("novalue", "has no ':'")],
)
def test_parse_map_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="is not a map") as caught:
        parse_map(text)
    assert fragment in str(caught.value)
    assert "key1:value1,key2:value2" in str(caught.value)


def test_split_outside_quotes_can_keep_the_quotes() -> None:
    assert split_outside_quotes("'a,b',c", ",", keep_quotes=True) == ["'a,b'", "c"]
    assert split_outside_quotes("'a,b',c", ",") == ["a,b", "c"]


# ---------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (30.0, "30 s"),
        (300.0, "5 min"),
        (90.0, "90 s"),
        (0.1, "100 ms"),
        (7200.0, "2 h"),
        (86400.0, "1 d"),
        (0.0, "0 ms"),
        (5e-6, "5 us"),
        (3e-9, "3 ns"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["ms", "s", "min", "h", "d"]))
def test_format_duration_round_trips(count: int, unit: str) -> None:
    seconds = parse_duration(f"{count} {unit}")
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@given(st.integers(min_value=0, max_value=2**50))
def test_format_memory_size_round_trips(size: int) -> None:
    assert parse_memory_size(format_memory_size(size)) == size


def test_format_memory_size_picks_the_largest_exact_unit() -> None:
    assert format_memory_size(1728 * 2**20) == "1728m"
    assert format_memory_size(4 * 2**30) == "4g"
    assert format_memory_size(1000) == "1000b"
