"""An option set under two of its names: what was given last wins, and a warning names both.

Deprecated keys are older names of one option (``kubernetes.container.image`` for
``kubernetes.container.image.ref``); fallback keys are more general options and never beat
the specific one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rmd.config.flinkconf import ConfigError, FlinkConfiguration
from rmd.config.podoptions import TaskManagerPodOptions
from rmd.config.settings import RmdSettings
from rmd.podspec_cli import run_podspec

IMAGE = "kubernetes.container.image.ref"
IMAGE_OLD = "kubernetes.container.image"
CPU = "kubernetes.taskmanager.cpu.amount"
CPU_OLD = "kubernetes.taskmanager.cpu"
NO_ENV: dict[str, str] = {}


def load(tmp_path: Path, file_text: str, overrides: list[str]) -> FlinkConfiguration:
    (tmp_path / "config.yaml").write_text(
        "kubernetes.cluster-id: my-flink\n" + file_text, encoding="utf-8"
    )
    return FlinkConfiguration.load(conf_dir=tmp_path, overrides=overrides, environ=NO_ENV)


def alias_warnings(conf: FlinkConfiguration) -> list[str]:
    return [warning for warning in conf.warnings if "name the same option" in warning]


def test_d_with_the_old_image_key_beats_the_new_key_in_the_file(tmp_path: Path) -> None:
    conf = load(tmp_path, f"{IMAGE}: from-file:1\n", [f"{IMAGE_OLD}=from-cli:2"])
    settings = RmdSettings.from_configuration(conf)
    assert settings.image == "from-cli:2"
    pod = TaskManagerPodOptions.from_configuration(conf, settings)
    assert (pod.image, pod.image_explicit) == ("from-cli:2", True)
    [warning] = alias_warnings(conf)
    assert warning == (
        f"{IMAGE} (set in {tmp_path / 'config.yaml'}) and {IMAGE_OLD} (set with -D) name the "
        f"same option; using {IMAGE_OLD} = 'from-cli:2' (given last); keep one of them"
    )


def test_d_with_the_new_image_key_beats_the_old_key_in_the_file(tmp_path: Path) -> None:
    conf = load(tmp_path, f"{IMAGE_OLD}: from-file:1\n", [f"{IMAGE}=from-cli:2"])
    assert RmdSettings.from_configuration(conf).image == "from-cli:2"
    [warning] = alias_warnings(conf)
    assert f"using {IMAGE} = 'from-cli:2' (given last)" in warning
    assert IMAGE_OLD in warning


def test_both_names_in_one_file_the_current_name_wins_with_a_warning(tmp_path: Path) -> None:
    conf = load(tmp_path, f"{IMAGE_OLD}: old:1\n{IMAGE}: new:2\n", [])
    assert RmdSettings.from_configuration(conf).image == "new:2"
    [warning] = alias_warnings(conf)
    assert warning.startswith(f"{IMAGE} (set in {tmp_path / 'config.yaml'}) and {IMAGE_OLD} (")
    assert f"using {IMAGE} = 'new:2' (the current name)" in warning


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([f"{IMAGE}=first:1", f"{IMAGE_OLD}=second:2"], "second:2"),
        ([f"{IMAGE_OLD}=first:1", f"{IMAGE}=second:2"], "second:2"),
        ([f"{IMAGE_OLD}=first:1", f"{IMAGE}=second:2", f"{IMAGE_OLD}=third:3"], "third:3"),
    ],
)
def test_among_d_options_the_one_given_last_wins(
    tmp_path: Path, overrides: list[str], expected: str
) -> None:
    conf = load(tmp_path, "", overrides)
    assert RmdSettings.from_configuration(conf).image == expected
    [warning] = alias_warnings(conf)
    assert f"= '{expected}' (given last)" in warning


def test_d_with_the_old_cpu_key_beats_the_new_key_in_the_file(tmp_path: Path) -> None:
    conf = load(tmp_path, f"{CPU}: 1\n", [f"{CPU_OLD}=3"])
    assert RmdSettings.from_configuration(conf).taskmanager_cpu == 3.0
    [warning] = alias_warnings(conf)
    assert CPU in warning
    assert CPU_OLD in warning


def test_a_bad_value_names_the_alias_that_was_used(tmp_path: Path) -> None:
    conf = load(tmp_path, f"{IMAGE}: good:1\n", [f"{IMAGE_OLD}=bad image"])
    with pytest.raises(ConfigError) as caught:
        RmdSettings.from_configuration(conf)
    assert caught.value.key == IMAGE_OLD
    assert str(caught.value).startswith(f"{IMAGE_OLD}: 'bad image' is not a container image")
    assert str(caught.value).endswith("(set with -D)")


def test_one_name_set_in_both_places_is_no_warning(tmp_path: Path) -> None:
    conf = load(tmp_path, f"{IMAGE}: from-file:1\n", [f"{IMAGE}=from-cli:2"])
    assert RmdSettings.from_configuration(conf).image == "from-cli:2"
    assert alias_warnings(conf) == []


def test_a_fallback_key_never_beats_the_specific_option(tmp_path: Path) -> None:
    conf = load(
        tmp_path,
        "kubernetes.taskmanager.service-account: flink-tm\n"
        "resourcemanager.taskmanager-registration.timeout: 30 s\n",
        ["kubernetes.service-account=flink", "taskmanager.registration.timeout=90 s"],
    )
    settings = RmdSettings.from_configuration(conf)
    assert settings.registration_timeout == 30.0
    assert TaskManagerPodOptions.from_configuration(conf, settings).service_account == "flink-tm"
    assert conf.warnings == ()


def test_options_in_code_follow_the_same_rule() -> None:
    conf = FlinkConfiguration({"kubernetes.cluster-id": "c", IMAGE: "a:1"}).with_overrides(
        {IMAGE_OLD: "b:2"}
    )
    assert RmdSettings.from_configuration(conf).image == "b:2"
    [warning] = alias_warnings(conf)
    assert warning.startswith(f"{IMAGE} and {IMAGE_OLD} (set with -D) name the same option")


def test_rmd_podspec_shows_the_image_given_last_and_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.yaml").write_text(f"{IMAGE}: from-file:1\n", encoding="utf-8")
    code = run_podspec(
        ["--conf-dir", str(tmp_path), "-D", "kubernetes.cluster-id=demo", "-D", f"{IMAGE_OLD}=x:2"]
    )
    out, err = capsys.readouterr()
    assert code == 0
    pod = yaml.safe_load(out)
    assert pod["spec"]["containers"][0]["image"] == "x:2"
    assert err.startswith(f"rmd podspec: warning: {IMAGE} (set in ")
    assert f"using {IMAGE_OLD} = 'x:2' (given last)" in err
