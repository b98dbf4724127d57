"""The flink-config-<cluster-id> ConfigMap's content: what TaskManagers start Flink with."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rmd.config.files import parse_config_yaml
from rmd.config.flinkconf import ConfigError, FlinkConfiguration
from rmd.config.settings import RmdSettings
from rmd.daemon import load_daemon_config
from rmd.kube.flinkconfigmap import (
    flink_config_map,
    jobmanager_address,
    read_log_config_files,
    render_config_yaml,
)
from rmd.kube.podspec import OwnerReference

OWNER = OwnerReference(api_version="apps/v1", kind="Deployment", name="my-flink", uid="u-1")


def _conf(values: dict[str, str]) -> tuple[FlinkConfiguration, RmdSettings]:
    conf = FlinkConfiguration({"kubernetes.cluster-id": "my-flink", **values})
    return conf, RmdSettings.from_configuration(conf)


def test_rendered_config_yaml_reads_back_as_the_same_flat_configuration() -> None:
    values = {
        "env.java.opts.all": "--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=x=y",
        "taskmanager.numberOfTaskSlots": "2",
        "restart-strategy.type": "fixed-delay",
        "kubernetes.taskmanager.annotations": "emulator.rmd.dev/run:process",
        "high-availability.type": "NONE",
        "pipeline.classpaths": "file:/a.jar;file:/b.jar",
        "flag": "true",
        "quote": 'it\'s "quoted": yes # not a comment',
    }
    text = render_config_yaml(values)
    assert parse_config_yaml(text) == values
    document = yaml.safe_load(text)  # plain YAML: every value stays a string
    assert all(isinstance(value, str) for value in document.values())
    assert list(document) == sorted(values)


def test_jobmanager_address_is_configured_else_pod_ip_else_the_service() -> None:
    conf, settings = _conf({"jobmanager.rpc.address": "10.0.0.7"})
    assert jobmanager_address(conf, settings, environ={"_POD_IP_ADDRESS": "10.1.1.1"}) == (
        "10.0.0.7"
    )
    conf, settings = _conf({"kubernetes.namespace": "flink"})
    assert jobmanager_address(conf, settings, environ={"_POD_IP_ADDRESS": "10.1.1.1"}) == (
        "10.1.1.1"
    )
    assert jobmanager_address(conf, settings, environ={}) == "my-flink.flink"


def test_configmap_holds_the_effective_configuration_and_the_console_logging_files() -> None:
    conf, settings = _conf({"taskmanager.numberOfTaskSlots": "2"})
    conf = conf.with_overrides({"rest.port": "8082"})
    config_map = flink_config_map(
        conf,
        settings,
        log_files={"log4j-console.properties": "rootLogger.level = INFO\n"},
        environ={"_POD_IP_ADDRESS": "10.1.1.1"},
    )
    assert config_map.name == "flink-config-my-flink"
    assert config_map.namespace == "default"
    assert set(config_map.data) == {"config.yaml", "log4j-console.properties"}
    assert config_map.data["log4j-console.properties"] == "rootLogger.level = INFO\n"
    assert parse_config_yaml(config_map.data["config.yaml"]) == {
        "kubernetes.cluster-id": "my-flink",
        "taskmanager.numberOfTaskSlots": "2",
        "rest.port": "8082",
        "jobmanager.rpc.address": "10.1.1.1",
    }
    manifest = config_map.manifest(owner=OWNER)
    assert manifest["metadata"]["labels"] == {"type": "flink-native-kubernetes", "app": "my-flink"}
    assert manifest["metadata"]["ownerReferences"] == [OWNER.to_manifest()]
    assert "ownerReferences" not in config_map.manifest(owner=None)["metadata"]


def test_log_files_are_read_from_the_configuration_directory(tmp_path: Path) -> None:
    (tmp_path / "log4j-console.properties").write_text("a = b\n")
    (tmp_path / "log4j.properties").write_text("not for the console\n")
    assert read_log_config_files(tmp_path) == {"log4j-console.properties": "a = b\n"}
    (tmp_path / "logback-console.xml").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match=r"logback-console\.xml"):
        read_log_config_files(tmp_path)


def test_the_daemon_prepares_the_configmap_only_when_it_starts_flink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("_POD_IP_ADDRESS", raising=False)
    (tmp_path / "config.yaml").write_text(
        "kubernetes:\n  cluster-id: my-flink\njobmanager.rpc.address: 127.0.0.1\n"
    )
    (tmp_path / "logback-console.xml").write_text("<configuration/>\n")
    config = load_daemon_config(conf_dir=tmp_path, overrides=["taskmanager.numberOfTaskSlots=2"])
    assert config.flink_config_map is not None
    assert set(config.flink_config_map.data) == {"config.yaml", "logback-console.xml"}
    published = parse_config_yaml(config.flink_config_map.data["config.yaml"])
    assert published["taskmanager.numberOfTaskSlots"] == "2"
    assert published["jobmanager.rpc.address"] == "127.0.0.1"
    off = load_daemon_config(conf_dir=tmp_path, overrides=["rmd.taskmanager.supervise-flink=false"])
    assert off.flink_config_map is None


TEMPLATE = """\
apiVersion: v1
kind: Pod
metadata:
  labels:
    from-template: "yes"
spec:
  containers:
    - name: flink-main-container
      workingDir: /work
"""


def test_a_taskmanager_pod_template_travels_in_the_configmap_and_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in Flink's ConfigMap: ``taskmanager-pod-template.yaml`` beside ``config.yaml``, whose
    key then names the copy where the ConfigMap is mounted (``kubernetes.flink.conf.dir``). A
    daemon started from that mounted directory reads the template there and publishes the
    same ConfigMap again."""
    monkeypatch.delenv("_POD_IP_ADDRESS", raising=False)
    local, mounted = tmp_path / "local", tmp_path / "mounted"
    local.mkdir()
    (local / "tm.yaml").write_text(TEMPLATE)
    overrides = [
        "kubernetes.cluster-id=my-flink",
        "jobmanager.rpc.address=10.0.0.7",
        f"kubernetes.pod-template-file.taskmanager={local / 'tm.yaml'}",
        f"kubernetes.flink.conf.dir={mounted}",
    ]
    config = load_daemon_config(conf_dir=local, overrides=overrides)
    assert config.flink_config_map is not None
    data = dict(config.flink_config_map.data)
    assert set(data) == {"config.yaml", "taskmanager-pod-template.yaml"}
    assert data["taskmanager-pod-template.yaml"] == TEMPLATE
    published = parse_config_yaml(data["config.yaml"])
    assert published["kubernetes.pod-template-file.taskmanager"] == str(
        mounted / "taskmanager-pod-template.yaml"
    )

    mounted.mkdir()  # what the kubelet does with the ConfigMap volume
    for name, text in data.items():
        (mounted / name).write_text(text)
    in_pod = load_daemon_config(conf_dir=mounted, overrides=[])
    assert in_pod.flink_config_map is not None
    assert dict(in_pod.flink_config_map.data) == data
    pod = in_pod.pods.build(pod_name="my-flink-taskmanager-1-1", owner=None)
    assert pod["metadata"]["labels"]["from-template"] == "yes"
    main = pod["spec"]["containers"][0]
    assert main["workingDir"] == "/work"


def test_without_a_pod_template_the_configmap_has_none() -> None:
    conf, settings = _conf({})
    config_map = flink_config_map(conf, settings, log_files={}, environ={})
    assert "taskmanager-pod-template.yaml" not in config_map.data
    config_yaml = parse_config_yaml(config_map.data["config.yaml"])
    assert "kubernetes.pod-template-file.taskmanager" not in config_yaml
