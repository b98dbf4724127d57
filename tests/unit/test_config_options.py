"""The option table: each key once, defaults that parse, the known keys, README and the
example configuration generated from or checked against it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from rmd.config import options
from rmd.config.files import parse_config_yaml
from rmd.config.flinkconf import FlinkConfiguration
from rmd.config.option import ConfigOption, MapOption, OptionKey
from rmd.config.settings import RmdSettings
from rmd_dev.config_docs import README, main, options_markdown, with_generated_section

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "config.yaml"


def test_each_key_and_former_name_is_in_the_table_once() -> None:
    names = Counter(key for option in options.OPTIONS for key in option.aliases)
    assert [key for key, count in names.items() if count > 1] == []


def test_fallback_keys_are_not_names_of_other_options() -> None:
    names = {key for option in options.OPTIONS for key in option.aliases}
    assert [k for option in options.OPTIONS for k in option.fallback_keys if k in names] == []


def test_every_option_defined_is_in_the_table() -> None:
    defined = [value for value in vars(options).values() if isinstance(value, OptionKey)]
    assert set(map(id, defined)) == set(map(id, options.OPTIONS))


@pytest.mark.parametrize(
    "option",
    [o for o in options.OPTIONS if isinstance(o, ConfigOption) and o.default is not None],
    ids=lambda option: option.key,
)
def test_defaults_parse(option: ConfigOption[object]) -> None:
    assert option.default_value() is not None


def test_an_option_without_a_default_has_none_to_give() -> None:
    with pytest.raises(LookupError, match=r"slotmanager.number-of-slots.max has no default"):
        options.MAX_SLOTS.default_value()
    conf = FlinkConfiguration({})
    assert conf.get_optional(options.MAX_SLOTS) is None
    with pytest.raises(LookupError):
        conf.get(options.MAX_SLOTS)


def test_known_rmd_keys_are_the_tables_rmd_keys() -> None:
    table_keys = {key for option in options.OPTIONS for key in option.all_keys}
    assert {key for key in table_keys if key.startswith("rmd.")} == options.KNOWN_RMD_KEYS


def test_a_key_family_names_its_members() -> None:
    member = options.ENV_VARIABLE.for_name("JAVA_HOME")
    assert member.key == "containerized.taskmanager.env.JAVA_HOME"
    assert options.ENV_VARIABLE.family_prefix == "containerized.taskmanager.env."
    assert options.ENV_VARIABLE.is_family
    assert not member.is_family


def test_get_reads_an_option_by_any_of_its_names() -> None:
    conf = FlinkConfiguration({"kubernetes.taskmanager.cpu": "2.5"})
    assert conf.get_optional(options.TASKMANAGER_CPU) == 2.5
    assert conf.key_used(options.TASKMANAGER_CPU) == "kubernetes.taskmanager.cpu"
    assert conf.is_set(options.TASKMANAGER_CPU)
    assert not conf.is_set(options.CPU_CORES)
    assert conf.key_used(options.CPU_CORES) is None


def test_a_map_option_reads_inline_or_nested_entries() -> None:
    inline = FlinkConfiguration({"kubernetes.taskmanager.labels": "team:data"})
    nested = FlinkConfiguration({"kubernetes.taskmanager.labels.team": "data"})
    assert inline.get(options.LABELS) == nested.get(options.LABELS) == (("team", "data"),)
    assert FlinkConfiguration({}).get(options.LABELS) == ()
    assert isinstance(options.LABELS, MapOption)


def test_readme_tables_are_generated_from_the_table() -> None:
    readme = README.read_text(encoding="utf-8")
    assert with_generated_section(readme) == readme, "run make config-docs"
    assert main(["--check"]) == 0


def test_the_generated_tables_name_every_key_and_former_name() -> None:
    text = options_markdown()
    for option in options.OPTIONS:
        for key in option.all_keys:
            assert f"`{key}`" in text
    assert "| `kubernetes.namespace` | `default` |" in text
    assert "(formerly `kubernetes.container.image`)" in text


def test_a_stale_readme_is_found_and_rewritten(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    fresh = README.read_text(encoding="utf-8")
    readme.write_text(fresh.replace("| `kubernetes.namespace` | `default` |", "| x | y |"))
    assert main(["--check", "--readme", str(readme)]) == 1
    assert main(["--readme", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == fresh


def test_the_example_configuration_sets_only_keys_of_the_table() -> None:
    keys = parse_config_yaml(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    table_keys = {key for option in options.OPTIONS for key in option.all_keys}
    maps = {option.key for option in options.OPTIONS if isinstance(option, MapOption)}
    unknown = [
        key
        for key in keys
        if key not in table_keys and not any(key.startswith(m + ".") for m in maps)
    ]
    assert unknown == []


def test_the_example_configuration_states_the_tables_defaults() -> None:
    """Where conf/config.yaml says ``default: X`` next to a key, X is the table's default."""
    stated = _stated_defaults(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    checked = 0
    for option in options.OPTIONS:
        if isinstance(option, ConfigOption) and option.default and option.key in stated:
            # The comment writes the value as YAML, like the file ("[rmd, taskmanager]").
            text = parse_config_yaml(f"value: {stated[option.key]}")["value"]
            assert option.parse(text) == option.default_value(), option.key
            checked += 1
    assert checked >= 15


def test_the_example_configuration_reads_as_documented() -> None:
    settings = RmdSettings.from_configuration(
        FlinkConfiguration.load(conf_dir=EXAMPLE_CONFIG.parent, environ={})
    )
    assert settings.namespace == "default"


def _stated_defaults(text: str) -> dict[str, str]:
    """``key: value  # ... default: X`` (or the comment on the line before) → key: X."""
    stated: dict[str, str] = {}
    path: list[tuple[int, str]] = []
    pending: str | None = None
    for line in text.splitlines():
        content, _, comment = line.partition("#")
        if "default:" in comment:
            pending = comment.split("default:", 1)[1].strip().split(" (")[0]
        if not content.strip():
            continue
        indent = len(content) - len(content.lstrip())
        name = content.strip().split(":", 1)[0]
        path = [(i, n) for i, n in path if i < indent] + [(indent, name)]
        if content.strip().endswith(":"):
            continue  # a map: the default belongs to a key below it
        if pending is not None:
            stated[".".join(n for _, n in path)] = pending
            pending = None
    return stated
