"""RmdSettings: every default, every key, every validation message."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmd.config.flinkconf import ConfigError, FlinkConfiguration
from rmd.config.settings import KNOWN_RMD_KEYS, RmdSettings

REQUIRED = {"kubernetes.cluster-id": "my-flink"}


def from_values(values: dict[str, str]) -> RmdSettings:
    return RmdSettings.from_configuration(FlinkConfiguration({**REQUIRED, **values}))


def error_for(values: dict[str, str], *, without_cluster_id: bool = False) -> ConfigError:
    merged = values if without_cluster_id else {**REQUIRED, **values}
    with pytest.raises(ConfigError) as caught:
        RmdSettings.from_configuration(FlinkConfiguration(merged))
    message = str(caught.value)
    assert "\n" not in message, "a ConfigError is one line"
    return caught.value


# ---------------------------------------------------------------------------- defaults


def test_every_default() -> None:
    s = from_values({})
    assert s.cluster_id == "my-flink"
    assert s.namespace == "default"
    assert s.image == "apache/flink:1.20"
    assert s.slots_per_taskmanager == 1
    assert s.taskmanager_memory_bytes == 1728 * 2**20
    assert s.taskmanager_cpu == 1.0
    assert s.idle_timeout == 30.0
    assert s.registration_timeout == 300.0
    assert s.max_start_failures_per_minute == 10.0
    assert s.start_retry_interval == 3.0
    assert s.max_slots is None
    assert s.redundant_taskmanagers == 0
    assert s.heartbeat_timeout == 50.0
    assert s.heartbeat_interval == 10.0
    assert s.taskmanager_rpc_port == 6122
    assert s.rest_address == "0.0.0.0"
    assert s.rest_port == 8090
    assert s.resourcemanager_url == "http://my-flink.default.svc:8090"
    assert s.auth_token_file is None
    assert s.auth_token_secret is None
    assert s.max_parallel_creates == 32
    assert s.watch_resync_interval == 300.0
    assert s.watch_idle_timeout == 70.0
    assert s.api_request_timeout == 30.0
    assert s.log_level == "info"
    assert s.agent_command == ("rmd", "taskmanager")
    assert s.supervise_flink is True


def test_constructed_in_code_the_defaults_match_the_configuration_defaults() -> None:
    assert RmdSettings(cluster_id="my-flink") == from_values({})
    direct = RmdSettings(cluster_id="c", namespace="ns", slots_per_taskmanager=4, rest_port=9)
    assert direct.taskmanager_cpu == 4.0
    assert direct.resourcemanager_url == "http://c.ns.svc:9"


# ---------------------------------------------------------------------------- every key read


def test_every_key_is_read() -> None:
    s = from_values(
        {
            "kubernetes.namespace": "flink",
            "kubernetes.container.image.ref": "registry.example/flink:2.0",
            "taskmanager.numberOfTaskSlots": "4",
            "taskmanager.memory.process.size": "4g",
            "kubernetes.taskmanager.cpu.amount": "2.5",
            "resourcemanager.taskmanager-timeout": "60000",
            "resourcemanager.taskmanager-registration.timeout": "2 min",
            "resourcemanager.start-worker.max-failure-rate": "2.5",
            "resourcemanager.start-worker.retry-interval": "10 s",
            "slotmanager.number-of-slots.max": "64",
            "slotmanager.redundant-taskmanager-num": "1",
            "heartbeat.timeout": "20000",
            "heartbeat.interval": "5 s",
            "taskmanager.rpc.port": "6123",
            "rmd.rest.address": "127.0.0.1",
            "rmd.rest.port": "9000",
            "rmd.taskmanager.resourcemanager-url": "https://rm.example:8443/",
            "rmd.auth.token-file": "/var/run/secrets/rmd/token",
            "rmd.auth.token-secret": "rmd-token",
            "rmd.kubernetes.max-parallel-requests": "12",
            "rmd.kubernetes.resync-interval": "1 min",
            "rmd.kubernetes.watch-idle-timeout": "5 s",
            "rmd.kubernetes.request-timeout": "10 s",
            "rmd.log.level": "DEBUG",
            "rmd.taskmanager.agent-command": "python;-m;rmd;taskmanager",
            "rmd.taskmanager.supervise-flink": "false",
        }
    )
    assert s == RmdSettings(
        cluster_id="my-flink",
        namespace="flink",
        image="registry.example/flink:2.0",
        slots_per_taskmanager=4,
        taskmanager_memory_bytes=4 * 2**30,
        taskmanager_cpu=2.5,
        idle_timeout=60.0,
        registration_timeout=120.0,
        max_start_failures_per_minute=2.5,
        start_retry_interval=10.0,
        max_slots=64,
        redundant_taskmanagers=1,
        heartbeat_timeout=20.0,
        heartbeat_interval=5.0,
        taskmanager_rpc_port=6123,
        rest_address="127.0.0.1",
        rest_port=9000,
        resourcemanager_url="https://rm.example:8443",
        auth_token_file=Path("/var/run/secrets/rmd/token"),
        auth_token_secret="rmd-token",
        max_parallel_creates=12,
        watch_resync_interval=60.0,
        watch_idle_timeout=5.0,
        api_request_timeout=10.0,
        log_level="debug",
        agent_command=("python", "-m", "rmd", "taskmanager"),
        supervise_flink=False,
    )


def test_cpu_defaults_to_the_number_of_slots() -> None:
    assert from_values({"taskmanager.numberOfTaskSlots": "3"}).taskmanager_cpu == 3.0


def test_cpu_flink_order_cores_then_amount_then_legacy_then_slots() -> None:
    base = {"taskmanager.numberOfTaskSlots": "3"}
    assert from_values({**base, "kubernetes.taskmanager.cpu": "1.5"}).taskmanager_cpu == 1.5
    assert (
        from_values(
            {**base, "kubernetes.taskmanager.cpu": "1.5", "kubernetes.taskmanager.cpu.amount": "2"}
        ).taskmanager_cpu
        == 2.0
    )
    assert (
        from_values(
            {**base, "kubernetes.taskmanager.cpu.amount": "2", "taskmanager.cpu.cores": "0.5"}
        ).taskmanager_cpu
        == 0.5
    )
    # Flink's own default for the Kubernetes key is -1.0: "unset", so the slots count.
    assert from_values({**base, "kubernetes.taskmanager.cpu.amount": "-1.0"}).taskmanager_cpu == 3.0


def test_image_falls_back_to_the_legacy_key() -> None:
    assert from_values({"kubernetes.container.image": "old:1"}).image == "old:1"
    both = {"kubernetes.container.image": "old:1", "kubernetes.container.image.ref": "new:2"}
    assert from_values(both).image == "new:2"


def test_registration_timeout_falls_back_to_taskmanager_registration_timeout() -> None:
    legacy = {"taskmanager.registration.timeout": "90 s"}
    assert from_values(legacy).registration_timeout == 90.0
    both = {**legacy, "resourcemanager.taskmanager-registration.timeout": "30 s"}
    assert from_values(both).registration_timeout == 30.0


def test_resourcemanager_url_default_follows_namespace_and_port() -> None:
    s = from_values({"kubernetes.namespace": "team-a", "rmd.rest.port": "18090"})
    assert s.resourcemanager_url == "http://my-flink.team-a.svc:18090"


def test_empty_optional_values_are_unset() -> None:
    s = from_values({"rmd.auth.token-file": "", "rmd.auth.token-secret": " "})
    assert s.auth_token_file is None
    assert s.auth_token_secret is None


def test_log_level_warn_is_warning() -> None:
    assert from_values({"rmd.log.level": "warn"}).log_level == "warning"


def test_heartbeat_interval_equal_to_timeout_is_accepted() -> None:
    s = from_values({"heartbeat.interval": "10 s", "heartbeat.timeout": "10000"})
    assert s.heartbeat_interval == s.heartbeat_timeout == 10.0


def test_settings_are_frozen() -> None:
    s = from_values({})
    with pytest.raises(AttributeError):
        s.cluster_id = "other"  # type: ignore[misc]


def test_known_rmd_keys() -> None:
    assert {
        "rmd.rest.address",
        "rmd.rest.port",
        "rmd.taskmanager.resourcemanager-url",
        "rmd.auth.token-file",
        "rmd.auth.token-secret",
        "rmd.kubernetes.max-parallel-requests",
        "rmd.kubernetes.resync-interval",
        "rmd.kubernetes.watch-idle-timeout",
        "rmd.kubernetes.request-timeout",
        "rmd.log.level",
        "rmd.taskmanager.agent-command",
        "rmd.taskmanager.supervise-flink",
    } <= KNOWN_RMD_KEYS
    assert all(key.startswith("rmd.") for key in KNOWN_RMD_KEYS)


def test_unknown_non_rmd_keys_are_fine() -> None:
    assert from_values({"some.other.flink.key": "x", "rmdx.key": "y"}).cluster_id == "my-flink"


# ---------------------------------------------------------------------------- errors


def test_missing_cluster_id() -> None:
    error = error_for({}, without_cluster_id=True)
    assert error.key == "kubernetes.cluster-id"
    assert "kubernetes.cluster-id is not set" in str(error)
    assert "-D kubernetes.cluster-id=my-flink" in str(error)


def test_blank_cluster_id_is_missing() -> None:
    assert "is not set" in str(error_for({"kubernetes.cluster-id": "  "}))


def test_cluster_id_too_long() -> None:
    long_id = "a" * 46
    error = error_for({"kubernetes.cluster-id": long_id})
    assert str(error).startswith(f"kubernetes.cluster-id: '{long_id}' is 46 characters long;")
    assert "at most 45" in str(error)
    assert from_values({"kubernetes.cluster-id": "a" * 45}).cluster_id == "a" * 45


@pytest.mark.parametrize("bad", ["My-Flink", "my_flink", "-flink", "flink-", "my.flink", "1flink"])
def test_cluster_id_must_be_a_dns_label(bad: str) -> None:
    error = error_for({"kubernetes.cluster-id": bad})
    assert error.key == "kubernetes.cluster-id"
    assert str(error).startswith(f"kubernetes.cluster-id: '{bad}' is not a valid Kubernetes name;")
    assert "e.g. 'my-flink'" in str(error)


@pytest.mark.parametrize("bad", ["Default", "a_b", "x" * 64, ""])
def test_namespace_must_be_a_dns_label(bad: str) -> None:
    error = error_for({"kubernetes.namespace": bad})
    assert str(error).startswith(f"kubernetes.namespace: '{bad}' is not a valid namespace name")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "taskmanager.numberOfTaskSlots",
            "0",
            "taskmanager.numberOfTaskSlots: '0' is too small; expected a value >= 1",
        ),
        (
            "taskmanager.numberOfTaskSlots",
            "four",
            "taskmanager.numberOfTaskSlots: 'four' is not an integer; expected a whole number",
        ),
        (
            "rmd.rest.port",
            "0",
            "rmd.rest.port: '0' is too small; expected a value >= 1",
        ),
        (
            "rmd.rest.port",
            "65536",
            "rmd.rest.port: '65536' is too large; expected a value <= 65535",
        ),
        (
            "slotmanager.number-of-slots.max",
            "0",
            "slotmanager.number-of-slots.max: '0' is too small; expected a value >= 1",
        ),
        (
            "slotmanager.redundant-taskmanager-num",
            "-1",
            "slotmanager.redundant-taskmanager-num: '-1' is too small; expected a value >= 0",
        ),
        (
            "rmd.kubernetes.max-parallel-requests",
            "0",
            "rmd.kubernetes.max-parallel-requests: '0' is too small; expected a value >= 1",
        ),
        (
            "rmd.kubernetes.watch-idle-timeout",
            "500 ms",
            "rmd.kubernetes.watch-idle-timeout: '500 ms' is shorter than 1 s; expected a "
            "duration of at least 1 s, e.g. '70 s'",
        ),
        (
            "resourcemanager.taskmanager-timeout",
            "0 s",
            "resourcemanager.taskmanager-timeout: '0 s' is zero; "
            "expected a positive duration, e.g. '30 s'",
        ),
        (
            "resourcemanager.start-worker.max-failure-rate",
            "0",
            "resourcemanager.start-worker.max-failure-rate: '0' is not positive; "
            "expected a number > 0",
        ),
        (
            "rmd.log.level",
            "verbose",
            "rmd.log.level: 'verbose' is not a log level; "
            "expected one of debug, info, warning, error",
        ),
        (
            "rmd.taskmanager.supervise-flink",
            "yes",
            "rmd.taskmanager.supervise-flink: 'yes' is not a boolean; expected true or false",
        ),
        (
            "rmd.taskmanager.agent-command",
            " ; ",
            "rmd.taskmanager.agent-command: is empty; "
            "expected the agent's command, e.g. 'rmd;taskmanager'",
        ),
        (
            "rmd.rest.address",
            "",
            "rmd.rest.address: is empty; expected e.g. '0.0.0.0'",
        ),
        (
            "taskmanager.rpc.port",
            "50100-50200",
            "taskmanager.rpc.port: '50100-50200' is not a single port; on Kubernetes the "
            "TaskManager needs a fixed port, e.g. 6122",
        ),
        (
            "taskmanager.rpc.port",
            "0",
            "taskmanager.rpc.port: '0' is too small; expected a value >= 1",
        ),
        (
            "taskmanager.cpu.cores",
            "0",
            "taskmanager.cpu.cores: '0' is not positive; expected e.g. 1 or 0.5",
        ),
        (
            "kubernetes.container.image.ref",
            "flink 1.20",
            "kubernetes.container.image.ref: 'flink 1.20' is not a container image; "
            "expected e.g. 'apache/flink:1.20'",
        ),
        (
            "taskmanager.memory.process.size",
            "512k",
            "taskmanager.memory.process.size: '512k' is less than 1 MiB; "
            "expected e.g. '1728m' or '4g'",
        ),
        (
            "rmd.auth.token-secret",
            "Bad_Name",
            "rmd.auth.token-secret: 'Bad_Name' is not a valid Secret name; expected lowercase "
            "letters, digits, '-' and '.', e.g. 'rmd-token'",
        ),
        (
            "rmd.taskmanager.resourcemanager-url",
            "rm.example:8090",
            "rmd.taskmanager.resourcemanager-url: 'rm.example:8090' is not an http(s) URL; "
            "expected e.g. 'http://my-flink.default.svc:8090'",
        ),
        (
            "rmd.taskmanager.resourcemanager-url",
            "http://rm:99999",
            "rmd.taskmanager.resourcemanager-url: 'http://rm:99999' has an invalid port; "
            "expected e.g. 'http://my-flink.default.svc:8090'",
        ),
    ],
)
def test_validation_messages(key: str, value: str, message: str) -> None:
    error = error_for({key: value})
    assert str(error) == message
    assert error.key == key


def test_bad_duration_message() -> None:
    error = error_for({"resourcemanager.taskmanager-timeout": "30 parsecs"})
    assert error.key == "resourcemanager.taskmanager-timeout"
    assert str(error).startswith(
        "resourcemanager.taskmanager-timeout: '30 parsecs' is not a duration"
    )
    assert str(error).endswith("e.g. '30 s', '5 min', '100ms'")


def test_zero_legacy_registration_timeout_names_the_legacy_key() -> None:
    error = error_for({"taskmanager.registration.timeout": "0"})
    assert error.key == "taskmanager.registration.timeout"
    assert str(error).startswith("taskmanager.registration.timeout: '0' is zero;")


def test_heartbeat_interval_longer_than_timeout() -> None:
    error = error_for({"heartbeat.interval": "1 min", "heartbeat.timeout": "50 s"})
    assert error.key == "heartbeat.interval"
    assert str(error) == (
        "heartbeat.interval: '1 min' is longer than heartbeat.timeout '50 s'; "
        "expected an interval <= the timeout"
    )


def test_misspelt_rmd_key_suggests_the_closest_known_key() -> None:
    error = error_for({"rmd.rest.prot": "9000"})
    assert error.key == "rmd.rest.prot"
    assert str(error).startswith("rmd.rest.prot: unknown rmd option; did you mean 'rmd.rest.port'?")


def test_unrelated_rmd_key_is_refused_without_a_guess() -> None:
    error = error_for({"rmd.zzz": "1"})
    assert str(error).startswith("rmd.zzz: unknown rmd option; remove it (known: rmd.auth.")


def test_misspelt_key_from_a_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "kubernetes.cluster-id: x\nrmd:\n  log:\n    levle: debug\n", encoding="utf-8"
    )
    conf = FlinkConfiguration.load(conf_dir=tmp_path, environ={})
    with pytest.raises(ConfigError) as caught:
        RmdSettings.from_configuration(conf)
    message = str(caught.value)
    assert message.startswith("rmd.log.levle: unknown rmd option; did you mean 'rmd.log.level'?")
    assert message.endswith(f"(set in {tmp_path / 'config.yaml'})")


def test_end_to_end_from_config_yaml_with_overrides(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "kubernetes:\n"
        "  cluster-id: from-file\n"
        "  namespace: flink\n"
        "taskmanager:\n"
        "  numberOfTaskSlots: 2\n"
        "  memory:\n"
        "    process:\n"
        "      size: 2g\n"
        "resourcemanager:\n"
        "  taskmanager-timeout: 10000\n"
        "rmd:\n"
        "  taskmanager:\n"
        "    agent-command: [rmd, taskmanager, --verbose]\n"
        "    supervise-flink: false\n",
        encoding="utf-8",
    )
    conf = FlinkConfiguration.load(
        conf_dir=tmp_path, overrides=["kubernetes.cluster-id=from-cli"], environ={}
    )
    s = RmdSettings.from_configuration(conf)
    assert s.cluster_id == "from-cli"
    assert s.namespace == "flink"
    assert s.slots_per_taskmanager == 2
    assert s.taskmanager_cpu == 2.0
    assert s.taskmanager_memory_bytes == 2 * 2**30
    assert s.idle_timeout == 10.0
    assert s.agent_command == ("rmd", "taskmanager", "--verbose")
    assert s.supervise_flink is False
    assert s.resourcemanager_url == "http://from-cli.flink.svc:8090"


def test_describe_uses_flink_units() -> None:
    described = from_values({"taskmanager.numberOfTaskSlots": "2"}).describe()
    assert described["idle_timeout"] == "30 s"
    assert described["registration_timeout"] == "5 min"
    assert described["taskmanager_memory_bytes"] == "1728m"
    assert described["taskmanager_cpu"] == "2.0"
    assert described["max_slots"] == "unset"
    assert described["agent_command"] == "rmd taskmanager"
    assert set(described) == set(vars(from_values({})))


# ---------------------------------------------------------------------------- the example file

EXAMPLE_CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def test_the_example_config_is_valid() -> None:
    conf = FlinkConfiguration.load(conf_dir=EXAMPLE_CONF_DIR, environ={})
    assert conf.warnings == ()
    s = RmdSettings.from_configuration(conf)
    assert s.cluster_id == "rmd-demo"
    assert s.supervise_flink is False
    assert s.resourcemanager_url == "http://127.0.0.1:8090"


def test_the_example_config_documents_every_rmd_key() -> None:
    text = (EXAMPLE_CONF_DIR / "config.yaml").read_text(encoding="utf-8")
    for key in KNOWN_RMD_KEYS:
        last = key.rsplit(".", 1)[1]
        assert f"{last}:" in text, f"{key} is not documented in conf/config.yaml"


def test_a_config_yaml_shaped_like_flinks_default_is_read(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "# Flink's distribution ships a file shaped like this one.\n"
        "env:\n"
        "  java:\n"
        "    opts:\n"
        "      all: --add-exports=java.base/sun.net.util=ALL-UNNAMED "
        "--add-opens=java.base/java.lang=ALL-UNNAMED\n"
        "jobmanager:\n"
        "  bind-host: localhost\n"
        "  rpc:\n"
        "    address: localhost\n"
        "    port: 6123\n"
        "  memory:\n"
        "    process:\n"
        "      size: 1600m\n"
        "taskmanager:\n"
        "  bind-host: localhost\n"
        "  host: localhost\n"
        "  numberOfTaskSlots: 1\n"
        "  memory:\n"
        "    process:\n"
        "      size: 1728m\n"
        "parallelism:\n"
        "  default: 1\n"
        "rest:\n"
        "  address: localhost\n"
        "  bind-address: localhost\n"
        "# high-availability:\n"
        "#   type: zookeeper\n",
        encoding="utf-8",
    )
    conf = FlinkConfiguration.load(
        conf_dir=tmp_path, overrides=["kubernetes.cluster-id=flink-1"], environ={}
    )
    assert conf.raw("env.java.opts.all") is not None
    assert conf.raw("jobmanager.rpc.port") == "6123"
    s = RmdSettings.from_configuration(conf)
    assert s.taskmanager_memory_bytes == 1728 * 2**20
    assert s.slots_per_taskmanager == 1
