"""FlinkConfiguration: reading config.yaml / flink-conf.yaml / -D, and typed access."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmd.config.files import parse_config_yaml, parse_legacy_flink_conf, parse_overrides
from rmd.config.flinkconf import ConfigError, FlinkConfiguration

NO_ENV: dict[str, str] = {}


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- config.yaml


def test_config_yaml_nested_maps_flatten_to_dotted_keys() -> None:
    values = parse_config_yaml(
        "kubernetes:\n  cluster-id: my-flink\n  taskmanager:\n    cpu:\n      amount: 2\n"
        "taskmanager.numberOfTaskSlots: 4\n"
    )
    assert values == {
        "kubernetes.cluster-id": "my-flink",
        "kubernetes.taskmanager.cpu.amount": "2",
        "taskmanager.numberOfTaskSlots": "4",
    }


def test_config_yaml_scalars_keep_the_text_as_written() -> None:
    values = parse_config_yaml(
        "a: true\nb: False\nc: 010\nd: 1.0\ne: 1_000\nf: '30 s'\ng: 30 s\nh: 2024-01-01\n"
        "i: 0x10\nj: yes\n"
    )
    assert values == {
        "a": "true",
        "b": "False",
        "c": "010",
        "d": "1.0",
        "e": "1_000",
        "f": "30 s",
        "g": "30 s",
        "h": "2024-01-01",
        "i": "0x10",
        "j": "yes",
    }


def test_config_yaml_lists_become_semicolon_joined() -> None:
    values = parse_config_yaml("cmd: [rmd, taskmanager]\nother:\n  - a\n  - 'b;c'\n")
    assert values == {"cmd": "rmd;taskmanager", "other": "a;'b;c'"}
    conf = FlinkConfiguration(values)
    assert conf.get_list("cmd") == ["rmd", "taskmanager"]
    assert conf.get_list("other") == ["a", "b;c"]


def test_config_yaml_list_of_maps_reads_back_item_by_item() -> None:
    values = parse_config_yaml(
        "kubernetes.taskmanager.tolerations:\n"
        "  - {key: k1, operator: Equal, value: v1, effect: NoSchedule}\n"
        "  - {key: k2, operator: Exists, note: 'a,b'}\n"
    )
    conf = FlinkConfiguration(values)
    items = conf.get_list("kubernetes.taskmanager.tolerations")
    from rmd.config.values import parse_map

    assert [parse_map(item) for item in items] == [
        {"key": "k1", "operator": "Equal", "value": "v1", "effect": "NoSchedule"},
        {"key": "k2", "operator": "Exists", "note": "a,b"},
    ]


def test_config_yaml_map_under_a_map_key_is_readable_with_get_map() -> None:
    conf = FlinkConfiguration(
        parse_config_yaml(
            "kubernetes:\n  taskmanager:\n    labels:\n      team: data\n      tier: 2\n"
        )
    )
    assert conf.keys() == [
        "kubernetes.taskmanager.labels.team",
        "kubernetes.taskmanager.labels.tier",
    ]
    assert conf.get_map("kubernetes.taskmanager.labels") == {"team": "data", "tier": "2"}


def test_config_yaml_null_values_are_unset() -> None:
    assert parse_config_yaml("a:\nb: ~\nc: null\nd: x\n") == {"d": "x"}


def test_config_yaml_empty_or_comment_only_is_empty() -> None:
    assert parse_config_yaml("") == {}
    assert parse_config_yaml("# nothing here\n") == {}


def test_config_yaml_syntax_error_names_file_and_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_yaml("a: 1\nb: [unclosed\nc: 3\n", source="/etc/flink/config.yaml")
    message = str(caught.value)
    assert message.startswith("/etc/flink/config.yaml line ")
    assert "invalid YAML" in message
    assert "\n" not in message


def test_config_yaml_bad_indentation_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"config.yaml line 3, column \d+: invalid YAML"):
        parse_config_yaml("kubernetes:\n  cluster-id: x\n namespace: y\n")


def test_config_yaml_top_level_must_be_a_map() -> None:
    with pytest.raises(ConfigError, match="top level is a list, not a map"):
        parse_config_yaml("- a\n- b\n")


def test_config_yaml_nested_list_in_list_is_refused() -> None:
    with pytest.raises(ConfigError, match="nested inside a list") as caught:
        parse_config_yaml("x: [[1, 2]]\n")
    assert caught.value.key == "x"


# ---------------------------------------------------------------------------- flink-conf.yaml


def test_legacy_flink_conf_lines_and_comments() -> None:
    warnings: list[str] = []
    values = parse_legacy_flink_conf(
        "# a comment\n"
        "kubernetes.cluster-id: my-flink   # trailing comment\n"
        "\n"
        "env.java.opts: -Dx=y: z\n"
        "broken:line\n"
        "empty: \n"
        "quoted: 'flink:1.20'\n"
        'double: "a b"\n'
        "lonely: 'x\n",
        source="flink-conf.yaml",
        warnings=warnings,
    )
    assert values == {
        "kubernetes.cluster-id": "my-flink",
        "env.java.opts": "-Dx=y: z",
        "quoted": "flink:1.20",
        "double": "a b",
        "lonely": "'x",
    }
    assert len(warnings) == 2
    assert warnings[0].startswith("flink-conf.yaml line 5: 'broken:line' is not 'key: value'")
    assert "line 6" in warnings[1]


# ---------------------------------------------------------------------------- load()


def test_load_reads_config_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "kubernetes:\n  cluster-id: from-yaml\n")
    conf = FlinkConfiguration.load(conf_dir=tmp_path, environ=NO_ENV)
    assert conf.raw("kubernetes.cluster-id") == "from-yaml"
    assert conf.origin("kubernetes.cluster-id") == str(path)
    assert conf.warnings == ()


def test_load_reads_legacy_flink_conf(tmp_path: Path) -> None:
    write(tmp_path, "flink-conf.yaml", "kubernetes.cluster-id: legacy\nbad line\n")
    conf = FlinkConfiguration.load(conf_dir=tmp_path, environ=NO_ENV)
    assert conf.raw("kubernetes.cluster-id") == "legacy"
    assert len(conf.warnings) == 1
    assert "bad line" in conf.warnings[0]


def test_load_prefers_config_yaml_over_flink_conf_and_warns(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "kubernetes.cluster-id: new\n")
    write(tmp_path, "flink-conf.yaml", "kubernetes.cluster-id: old\nonly.legacy: x\n")
    conf = FlinkConfiguration.load(conf_dir=tmp_path, environ=NO_ENV)
    assert conf.raw("kubernetes.cluster-id") == "new"
    assert "only.legacy" not in conf
    assert len(conf.warnings) == 1
    assert "flink-conf.yaml is ignored" in conf.warnings[0]


def test_load_overrides_win_over_the_file(tmp_path: Path) -> None:
    write(
        tmp_path, "config.yaml", "kubernetes.cluster-id: file\ntaskmanager.numberOfTaskSlots: 2\n"
    )
    conf = FlinkConfiguration.load(
        conf_dir=tmp_path,
        overrides=["kubernetes.cluster-id=cli", "-Dextra=a=b"],
        environ=NO_ENV,
    )
    assert conf.raw("kubernetes.cluster-id") == "cli"
    assert conf.origin("kubernetes.cluster-id") == "-D"
    assert conf.raw("taskmanager.numberOfTaskSlots") == "2"
    assert conf.raw("extra") == "a=b"


def test_load_malformed_override_names_the_argument(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        FlinkConfiguration.load(conf_dir=tmp_path, overrides=["no-equals-sign"], environ=NO_ENV)
    assert str(caught.value) == (
        "-D 'no-equals-sign' is not key=value; write e.g. -D kubernetes.cluster-id=my-flink"
    )


def test_parse_overrides_rejects_an_empty_key() -> None:
    with pytest.raises(ConfigError, match="-D '=x' is not key=value"):
        parse_overrides(["=x"])


def test_load_explicit_missing_dir_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="does not exist") as caught:
        FlinkConfiguration.load(conf_dir=missing, environ=NO_ENV)
    assert str(missing) in str(caught.value)
    assert "--conf-dir" in str(caught.value)


def test_load_flink_conf_dir_env_is_used(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "a: from-env\n")
    conf = FlinkConfiguration.load(conf_dir=None, environ={"FLINK_CONF_DIR": str(tmp_path)})
    assert conf.raw("a") == "from-env"


def test_load_flink_conf_dir_env_pointing_nowhere_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$FLINK_CONF_DIR\) does not exist"):
        FlinkConfiguration.load(conf_dir=None, environ={"FLINK_CONF_DIR": str(tmp_path / "x")})


def test_load_default_conf_dir_missing_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    conf = FlinkConfiguration.load(conf_dir=None, overrides=["a=1"], environ=NO_ENV)
    assert conf.as_dict() == {"a": "1"}


def test_load_default_conf_dir_is_dot_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "conf", "flink-conf.yaml", "a: 1\n")
    monkeypatch.chdir(tmp_path)
    assert FlinkConfiguration.load(conf_dir=None, environ=NO_ENV).raw("a") == "1"


def test_load_existing_dir_without_files_is_empty(tmp_path: Path) -> None:
    assert len(FlinkConfiguration.load(conf_dir=tmp_path, environ=NO_ENV)) == 0


def test_load_yaml_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "a: [\n")
    with pytest.raises(ConfigError, match=f"^{path} line "):
        FlinkConfiguration.load(conf_dir=tmp_path, environ=NO_ENV)


def test_errors_name_where_a_value_was_set(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "heartbeat.timeout: 30 parsecs\n")
    conf = FlinkConfiguration.load(conf_dir=tmp_path, overrides=["x=y z"], environ=NO_ENV)
    with pytest.raises(ConfigError, match=f"\\(set in {path}\\)$"):
        conf.get_duration("heartbeat.timeout", 50.0)
    with pytest.raises(ConfigError, match=r"\(set with -D\)$"):
        conf.get_int("x", 1)


# ---------------------------------------------------------------------------- typed access


def test_get_str_with_fallback_keys_and_default() -> None:
    conf = FlinkConfiguration({"old.key": " value ", "both": "new"})
    assert conf.get_str("new.key", fallback_keys=["old.key"]) == "value"
    assert conf.get_str("both", fallback_keys=["old.key"]) == "new"
    assert conf.get_str("missing", "dflt") == "dflt"
    assert conf.get_str("missing") is None


def test_get_int() -> None:
    conf = FlinkConfiguration({"n": " 4 ", "neg": "-3", "plus": "+2"})
    assert conf.get_int("n", None) == 4
    assert conf.get_int("neg", None) == -3
    assert conf.get_int("plus", None) == 2
    assert conf.get_int("missing", 7) == 7
    assert conf.get_int("missing", None) is None
    assert conf.get_int("new", None, fallback_keys=["n"]) == 4


@pytest.mark.parametrize("text", ["two", "1.5", "1_000", "", "4 slots", "٣"])
def test_get_int_rejects_non_integers(text: str) -> None:
    conf = FlinkConfiguration({"taskmanager.numberOfTaskSlots": text})
    with pytest.raises(ConfigError) as caught:
        conf.get_int("taskmanager.numberOfTaskSlots", 1)
    assert str(caught.value) == (
        f"taskmanager.numberOfTaskSlots: '{text}' is not an integer; expected a whole number"
    )
    assert caught.value.key == "taskmanager.numberOfTaskSlots"


def test_get_int_range() -> None:
    conf = FlinkConfiguration({"p": "0", "q": "70000"})
    with pytest.raises(ConfigError, match=r"^p: '0' is too small; expected a value >= 1$"):
        conf.get_int("p", None, min_value=1)
    with pytest.raises(ConfigError, match=r"^q: '70000' is too large; expected a value <= 65535$"):
        conf.get_int("q", None, max_value=65535)


def test_get_int_error_names_the_fallback_key_that_was_set() -> None:
    conf = FlinkConfiguration({"old": "x"})
    with pytest.raises(ConfigError, match=r"^old: 'x' is not an integer") as caught:
        conf.get_int("new", 1, fallback_keys=["old"])
    assert caught.value.key == "old"


def test_get_float() -> None:
    conf = FlinkConfiguration({"a": "0.5", "b": "2", "c": "1e3", "d": "-1.5", "e": ".5"})
    assert conf.get_float("a", None) == 0.5
    assert conf.get_float("b", None) == 2.0
    assert conf.get_float("c", None) == 1000.0
    assert conf.get_float("d", None) == -1.5
    assert conf.get_float("e", None) == 0.5
    assert conf.get_float("missing", 3.0) == 3.0
    with pytest.raises(ConfigError, match=r"^d: '-1.5' is too small; expected a value >= 0$"):
        conf.get_float("d", None, min_value=0)


@pytest.mark.parametrize("text", ["nan", "inf", "one", "1.2.3", "1e", "", "1_0"])
def test_get_float_rejects(text: str) -> None:
    with pytest.raises(
        ConfigError, match=f"^cpu: '{text}' is not a number; expected e.g. 2 or 0.5$"
    ):
        FlinkConfiguration({"cpu": text}).get_float("cpu", 1.0)


def test_get_bool() -> None:
    conf = FlinkConfiguration({"t": "TRUE", "f": "false", "bad": "yes"})
    assert conf.get_bool("t", False) is True
    assert conf.get_bool("f", True) is False
    assert conf.get_bool("missing", True) is True
    with pytest.raises(ConfigError, match=r"^bad: 'yes' is not a boolean; expected true or false$"):
        conf.get_bool("bad", False)


def test_get_duration() -> None:
    conf = FlinkConfiguration(
        {"resourcemanager.taskmanager-timeout": "30000", "heartbeat.timeout": "50 s", "m": "5"}
    )
    assert conf.get_duration("resourcemanager.taskmanager-timeout", None) == 30.0
    assert conf.get_duration("heartbeat.timeout", None) == 50.0
    assert conf.get_duration("m", None, default_unit="min") == 300.0
    assert conf.get_duration("missing", 3.0) == 3.0
    assert conf.get_duration("new", None, fallback_keys=["heartbeat.timeout"]) == 50.0


def test_get_duration_error_message() -> None:
    conf = FlinkConfiguration({"resourcemanager.taskmanager-timeout": "30 parsecs"})
    with pytest.raises(ConfigError) as caught:
        conf.get_duration("resourcemanager.taskmanager-timeout", 30.0)
    message = str(caught.value)
    assert message.startswith("resourcemanager.taskmanager-timeout: '30 parsecs' is not a duration")
    assert message.endswith("e.g. '30 s', '5 min', '100ms'")
    assert caught.value.key == "resourcemanager.taskmanager-timeout"


def test_get_memory() -> None:
    conf = FlinkConfiguration({"mem": "1728m", "bad": "lots"})
    assert conf.get_memory("mem", None) == 1728 * 2**20
    assert conf.get_memory("missing", 5) == 5
    with pytest.raises(ConfigError, match=r"^bad: 'lots' is not a memory size"):
        conf.get_memory("bad", None)


def test_get_list() -> None:
    conf = FlinkConfiguration({"l": "a;b", "c": "x,y", "bad": "'open"})
    assert conf.get_list("l") == ["a", "b"]
    assert conf.get_list("c", separator=",") == ["x", "y"]
    assert conf.get_list("missing", ["d"]) == ["d"]
    assert conf.get_list("missing") == []
    with pytest.raises(ConfigError, match=r"^bad: "):
        conf.get_list("bad")


def test_get_map_inline_and_prefixed() -> None:
    conf = FlinkConfiguration(
        {
            "inline": "a:1,b:2",
            "prefixed.a": "1",
            "prefixed.b.c": "2",
            "prefixedx": "not mine",
        }
    )
    assert conf.get_map("inline") == {"a": "1", "b": "2"}
    assert conf.get_map("prefixed") == {"a": "1", "b.c": "2"}
    assert conf.get_map("missing") == {}
    assert conf.get_map("missing", {"d": "e"}) == {"d": "e"}


def test_get_map_inline_value_wins_over_prefixed_keys_as_in_flink() -> None:
    conf = FlinkConfiguration({"labels.a": "from-yaml"}).with_overrides({"labels": "a:from-cli"})
    assert conf.get_map("labels") == {"a": "from-cli"}


def test_get_map_error() -> None:
    conf = FlinkConfiguration({"kubernetes.taskmanager.labels": "team"})
    with pytest.raises(ConfigError) as caught:
        conf.get_map("kubernetes.taskmanager.labels")
    assert str(caught.value) == (
        "kubernetes.taskmanager.labels: 'team' is not a map: entry 'team' has no ':'; "
        "expected 'key1:value1,key2:value2'"
    )


def test_with_prefix() -> None:
    conf = FlinkConfiguration(
        {
            "containerized.taskmanager.env.FOO": "1",
            "containerized.taskmanager.env.BAR": "x y",
            "containerized.taskmanager.env.": "ignored: nothing after the prefix",
            "containerized.jobmanager.env.BAZ": "2",
        }
    )
    assert conf.with_prefix("containerized.taskmanager.env.") == {"BAR": "x y", "FOO": "1"}


def test_with_overrides_returns_a_new_configuration() -> None:
    base = FlinkConfiguration({"a": "1"})
    changed = base.with_overrides({"a": "2", "b": "3"})
    assert base.raw("a") == "1"
    assert "b" not in base
    assert changed.as_dict() == {"a": "2", "b": "3"}
    assert changed.origin("b") == "-D"


def test_keys_contains_and_raw() -> None:
    conf = FlinkConfiguration({"b": "2", "a": "1"})
    assert conf.keys() == ["a", "b"]
    assert list(conf) == ["a", "b"]
    assert "a" in conf
    assert "c" not in conf
    assert 3 not in conf
    assert conf.raw("c") is None
    assert conf == FlinkConfiguration({"a": "1", "b": "2"})


def test_config_error_is_a_value_error_with_a_key() -> None:
    error = ConfigError("x: bad", key="x")
    assert isinstance(error, ValueError)
    assert error.key == "x"
    assert str(error) == "x: bad"
    assert ConfigError("general").key is None


def test_load_conf_dir_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "a: 1\n")
    with pytest.raises(ConfigError, match="is not a directory; point it at the directory"):
        FlinkConfiguration.load(conf_dir=path, environ=NO_ENV)
