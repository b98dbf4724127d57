"""Invalid TaskManager pod configuration stops start-up with one line naming the key (or the
template file) and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmd.config.flinkconf import ConfigError, FlinkConfiguration
from rmd.config.settings import RmdSettings
from rmd.kube.podspec import TaskManagerPodFactory

TOLERATIONS = "kubernetes.taskmanager.tolerations"
SECRET_ENV = "kubernetes.env.secretKeyRef"
TEMPLATE_KEY = "kubernetes.pod-template-file.taskmanager"


def make_factory(config: dict[str, str]) -> TaskManagerPodFactory:
    conf = FlinkConfiguration({"kubernetes.cluster-id": "flink-errors", **config})
    return TaskManagerPodFactory.from_configuration(conf, RmdSettings.from_configuration(conf))


def config_error(config: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        make_factory(config)
    message = str(caught.value)
    assert "\n" not in message, "a ConfigError is one line"
    return caught.value


# (configuration, the key the error must name, words the message must contain)
OPTION_ERRORS: list[tuple[dict[str, str], str, tuple[str, ...]]] = [
    (
        {"kubernetes.flink.conf.dir": "conf"},
        "kubernetes.flink.conf.dir",
        ("'conf'", "absolute path"),
    ),
    (
        {"kubernetes.taskmanager.cpu.limit-factor": "0.5"},
        "kubernetes.taskmanager.cpu.limit-factor",
        ("'0.5'", "at least 1.0"),
    ),
    (
        {"kubernetes.taskmanager.memory.limit-factor": "0.99"},
        "kubernetes.taskmanager.memory.limit-factor",
        ("'0.99'", "at least 1.0"),
    ),
    (
        {"kubernetes.taskmanager.cpu.limit-factor": "double"},
        "kubernetes.taskmanager.cpu.limit-factor",
        ("not a number",),
    ),
    (
        {"taskmanager.memory.process.size": "12 parsecs"},
        "taskmanager.memory.process.size",
        ("not a memory size",),
    ),
    (
        {"kubernetes.container.image.pull-policy": "Sometimes"},
        "kubernetes.container.image.pull-policy",
        ("'Sometimes'", "IfNotPresent", "Always", "Never"),
    ),
    (
        {"kubernetes.container.image.pull-secrets": "good;Bad_Name"},
        "kubernetes.container.image.pull-secrets",
        ("'Bad_Name'",),
    ),
    (
        {TOLERATIONS: "key:k,value:v,effect:NoSchedule"},
        TOLERATIONS,
        ("no operator", "operator:Equal", "operator:Exists"),
    ),
    (
        {TOLERATIONS: "key:k,operator:Equal,value:v;key:k2,effect:NoSchedule"},
        TOLERATIONS,
        ("'key:k2,effect:NoSchedule'", "no operator"),
    ),
    ({TOLERATIONS: "key:k,operator:Equals,value:v"}, TOLERATIONS, ("'Equals'", "Equal or Exists")),
    ({TOLERATIONS: "key:k,operator:Exists,effect:Never"}, TOLERATIONS, ("'Never'", "NoExecute")),
    ({TOLERATIONS: "key:k,operator:Exists,value:v"}, TOLERATIONS, ("value", "Exists")),
    ({TOLERATIONS: "operator:Equal,value:v"}, TOLERATIONS, ("no key",)),
    (
        {TOLERATIONS: "key:k,operator:Exists,effect:NoSchedule,tolerationSeconds:60"},
        TOLERATIONS,
        ("tolerationSeconds", "NoExecute"),
    ),
    (
        {TOLERATIONS: "key:k,operator:Exists,effect:NoExecute,tolerationSeconds:soon"},
        TOLERATIONS,
        ("'soon'", "whole seconds"),
    ),
    ({TOLERATIONS: "key:k,operator:Exists,color:blue"}, TOLERATIONS, ("unknown", "color")),
    ({TOLERATIONS: "key=k,operator=Exists"}, TOLERATIONS, ("not a map",)),
    (
        {"kubernetes.taskmanager.labels": "team=data"},
        "kubernetes.taskmanager.labels",
        ("not a map", "key1:value1"),
    ),
    (
        {"kubernetes.taskmanager.labels": "team:data science"},
        "kubernetes.taskmanager.labels",
        ("'data science'", "label value"),
    ),
    (
        {"kubernetes.taskmanager.node-selector": "disk/type/x:ssd"},
        "kubernetes.taskmanager.node-selector",
        ("'disk/type/x'", "label key"),
    ),
    (
        {"kubernetes.taskmanager.annotations": "not valid:x"},
        "kubernetes.taskmanager.annotations",
        ("'not valid'", "annotation key"),
    ),
    ({SECRET_ENV: "env:FOO,secret:foo"}, SECRET_ENV, ("lacks key", "env:FOO_ENV")),
    ({SECRET_ENV: "secret:foo,key:k"}, SECRET_ENV, ("lacks env",)),
    ({SECRET_ENV: "env:FOO,secret:foo,key:k,optional:true"}, SECRET_ENV, ("unknown", "optional")),
    ({SECRET_ENV: "env:FOO,secret,key:k"}, SECRET_ENV, ("not a map",)),
    ({SECRET_ENV: "env:1FOO,secret:foo,key:k"}, SECRET_ENV, ("'1FOO'", "environment variable")),
    ({"kubernetes.secrets": "foo:opt/foo"}, "kubernetes.secrets", ("'opt/foo'", "absolute")),
    ({"kubernetes.secrets": "Foo:/opt/foo"}, "kubernetes.secrets", ("'Foo'", "Secret name")),
    (
        {"kubernetes.secrets": "a:/opt/x,b:/opt/x"},
        "kubernetes.secrets",
        ("share one mount path",),
    ),
    (
        {"containerized.taskmanager.env.1BAD": "x"},
        "containerized.taskmanager.env.1BAD",
        ("'1BAD'", "environment variable"),
    ),
    (
        {"kubernetes.taskmanager.entrypoint.args": "-Dx='unclosed"},
        "kubernetes.taskmanager.entrypoint.args",
        ("close the quotes",),
    ),
    (
        {"kubernetes.service-account": "Flink_Account"},
        "kubernetes.service-account",
        ("'Flink_Account'", "ServiceAccount name"),
    ),
    (
        {
            "external-resources": "gpu",
            "external-resource.gpu.kubernetes.config-key": "nvidia.com/gpu",
        },
        "external-resource.gpu.amount",
        ("is not set", "nvidia.com/gpu"),
    ),
    (
        {
            "external-resources": "gpu",
            "external-resource.gpu.kubernetes.config-key": "nvidia.com/gpu",
            "external-resource.gpu.amount": "0",
        },
        "external-resource.gpu.amount",
        ("too small",),
    ),
    (
        {
            "external-resources": "gpu",
            "external-resource.gpu.kubernetes.config-key": "nvidia.com gpu",
            "external-resource.gpu.amount": "1",
        },
        "external-resource.gpu.kubernetes.config-key",
        ("'nvidia.com gpu'", "resource name"),
    ),
    ({"external-resources": "gpu;none"}, "external-resources", ("reserved",)),
]


@pytest.mark.parametrize(
    ("config", "key", "words"),
    OPTION_ERRORS,
    ids=[f"{key}-{index}" for index, (_, key, _) in enumerate(OPTION_ERRORS)],
)
def test_invalid_option_names_the_key(
    config: dict[str, str], key: str, words: tuple[str, ...]
) -> None:
    error = config_error(config)
    assert error.key == key
    message = str(error)
    assert message.startswith(f"{key}: ")
    for word in words:
        assert word in message


def test_error_says_where_the_value_was_set(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "kubernetes.cluster-id: flink-errors\nkubernetes.taskmanager.cpu.limit-factor: 0.5\n",
        encoding="utf-8",
    )
    conf = FlinkConfiguration.load(conf_dir=tmp_path)
    with pytest.raises(ConfigError) as caught:
        TaskManagerPodFactory.from_configuration(conf, RmdSettings.from_configuration(conf))
    assert str(tmp_path / "config.yaml") in str(caught.value)


# (template file content, words the message must contain)
TEMPLATE_ERRORS: list[tuple[str, tuple[str, ...]]] = [
    ("apiVersion: v1\nkind: Pod\nspec: [unclosed\n", ("not valid YAML", "line")),
    ("", ("is empty",)),
    ("- kind: Pod\n", ("holds a list", "not a Pod")),
    ("just a string\n", ("holds a string",)),
    (
        "apiVersion: apps/v1\nkind: Deployment\nspec: {}\n",
        ("kind 'Deployment'", "kind: Pod"),
    ),
    ("apiVersion: v1\nkind: PodTemplate\ntemplate: {}\n", ("kind 'PodTemplate'",)),
    ("apiVersion: apps/v1\nkind: Pod\n", ("apiVersion 'apps/v1'",)),
    ("kind: Pod\ntemplate:\n  spec: {}\n", ("unknown top-level", "template")),
    ("kind: Pod\nspec: []\n", ("spec of type list", "mapping")),
    ("kind: Pod\nspec:\n  containers: {name: x}\n", ("spec.containers", "must be a list")),
    ("kind: Pod\nspec:\n  containers:\n  - image: busybox\n", ("without a name",)),
    (
        "kind: Pod\nspec:\n  containers:\n  - name: a\n  - name: a\n",
        ("two spec.containers named 'a'",),
    ),
    ("kind: Pod\nmetadata:\n  labels:\n    version: 1\n", ("metadata.labels.version", "quote")),
    ("kind: Pod\nspec:\n  nodeSelector:\n    ssd: true\n", ("spec.nodeSelector.ssd",)),
    ("kind: Pod\nspec:\n  volumes:\n  - emptyDir: {}\n", ("spec.volumes[0] without a name",)),
    ("kind: Pod\nspec:\n  hostNetwork: yes-please\n", ("spec.hostNetwork",)),
    (
        "kind: Pod\nspec:\n  containers:\n  - name: flink-main-container\n    env: {A: b}\n",
        ("flink-main-container", "env", "must be a list"),
    ),
    (
        "kind: Pod\nspec:\n  containers:\n  - name: flink-main-container\n"
        "    resources: {limits: 2}\n",
        ("resources.limits", "mapping"),
    ),
]


@pytest.mark.parametrize(("content", "words"), TEMPLATE_ERRORS)
def test_invalid_template_names_the_file_and_key(
    tmp_path: Path, content: str, words: tuple[str, ...]
) -> None:
    template = tmp_path / "tm-template.yaml"
    template.write_text(content, encoding="utf-8")
    error = config_error({TEMPLATE_KEY: str(template)})
    message = str(error)
    assert error.key == TEMPLATE_KEY
    assert message.startswith(f"{TEMPLATE_KEY}: pod template file {template} ")
    for word in words:
        assert word in message


def test_missing_template_file_names_the_fallback_key_that_pointed_at_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    error = config_error({"kubernetes.pod-template-file.default": str(missing)})
    assert error.key == "kubernetes.pod-template-file.default"
    assert str(missing) in str(error)
    assert "does not exist" in str(error)


def test_unreadable_template_is_reported(tmp_path: Path) -> None:
    error = config_error({TEMPLATE_KEY: str(tmp_path)})  # a directory
    assert "cannot be read" in str(error)
    assert str(tmp_path) in str(error)


def test_build_refuses_an_invalid_pod_name() -> None:
    factory = make_factory({})
    with pytest.raises(ValueError, match="Not_A_Name"):
        factory.build(pod_name="Not_A_Name", owner=None)
