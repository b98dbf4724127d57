"""TaskManagerPodFactory behaviour: precedence between config, template and defaults, the
build API the daemon uses, Flink's option syntax from config.yaml, and ``rmd podspec``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rmd.config import agent_env
from rmd.config.flinkconf import FlinkConfiguration
from rmd.config.podoptions import taskmanager_arguments
from rmd.config.settings import RmdSettings
from rmd.flink.taskmanager_memory import TaskManagerMemory
from rmd.kube.podspec import OwnerReference, TaskManagerPodFactory, selector_string
from rmd.podspec_cli import run_podspec
from tests.unit.test_podspec_golden import CASES, GOLDEN_DIR

TEMPLATE_KEY = "kubernetes.pod-template-file.taskmanager"
OWNER = OwnerReference(api_version="apps/v1", kind="Deployment", name="my-flink", uid="1234-abcd")


def make_factory(config: dict[str, str]) -> TaskManagerPodFactory:
    conf = FlinkConfiguration({"kubernetes.cluster-id": "my-flink", **config})
    return TaskManagerPodFactory.from_configuration(conf, RmdSettings.from_configuration(conf))


def build(config: dict[str, str], *, owner: OwnerReference | None = None) -> dict[str, Any]:
    return make_factory(config).build(pod_name="my-flink-taskmanager-1-1", owner=owner)


def write_template(tmp_path: Path, text: str, name: str = "template.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def main_container(pod: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = [
        c for c in pod["spec"]["containers"] if c["name"] == "flink-main-container"
    ]
    assert len(containers) == 1
    return containers[0]


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    entries = main_container(pod)["env"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in entries}


# ---------------------------------------------------------------------------- build API


def test_selector_labels_are_flinks() -> None:
    factory = make_factory({})
    assert factory.selector_labels == {
        "type": "flink-native-kubernetes",
        "app": "my-flink",
        "component": "taskmanager",
    }
    assert selector_string(factory.selector_labels) == (
        "type=flink-native-kubernetes,app=my-flink,component=taskmanager"
    )


def test_selector_labels_win_over_user_and_template_labels(tmp_path: Path) -> None:
    template = write_template(
        tmp_path, "kind: Pod\nmetadata:\n  labels: {component: jobmanager, keep: 'yes'}\n"
    )
    pod = build({"kubernetes.taskmanager.labels": "app:other,type:x", TEMPLATE_KEY: template})
    labels = pod["metadata"]["labels"]
    assert {key: labels[key] for key in ("type", "app", "component")} == make_factory(
        {}
    ).selector_labels
    assert labels["keep"] == "yes"


def test_pod_carries_name_namespace_and_owner() -> None:
    pod = build({"kubernetes.namespace": "flink"}, owner=OWNER)
    assert pod["apiVersion"] == "v1"
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["name"] == "my-flink-taskmanager-1-1"
    assert pod["metadata"]["namespace"] == "flink"
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "my-flink",
            "uid": "1234-abcd",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_without_owner_there_is_no_owner_reference(tmp_path: Path) -> None:
    template = write_template(
        tmp_path,
        "kind: Pod\nmetadata:\n  ownerReferences:\n"
        "  - {apiVersion: v1, kind: ConfigMap, name: x, uid: y}\n",
    )
    pod = build({TEMPLATE_KEY: template})
    assert "ownerReferences" not in pod["metadata"]


def test_each_build_is_a_fresh_copy() -> None:
    factory = make_factory({"kubernetes.taskmanager.labels": "a:b"})
    first = factory.build(pod_name="my-flink-taskmanager-1-1", owner=OWNER)
    first["metadata"]["labels"]["a"] = "changed"
    main_container(first)["env"].clear()
    second = factory.build(pod_name="my-flink-taskmanager-1-2", owner=None)
    assert second["metadata"]["name"] == "my-flink-taskmanager-1-2"
    assert second["metadata"]["labels"]["a"] == "b"
    assert main_container(second)["env"]
    assert "ownerReferences" not in second["metadata"]


def test_template_is_read_once_up_front(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text("kind: Pod\nmetadata:\n  labels: {from: template}\n", encoding="utf-8")
    factory = make_factory({TEMPLATE_KEY: str(template)})
    template.unlink()
    pod = factory.build(pod_name="my-flink-taskmanager-1-1", owner=None)
    assert pod["metadata"]["labels"]["from"] == "template"


# ---------------------------------------------------------------------------- precedence


def test_restart_policy_is_never_even_when_the_template_says_always(tmp_path: Path) -> None:
    template = write_template(tmp_path, "kind: Pod\nspec:\n  restartPolicy: Always\n")
    assert build({TEMPLATE_KEY: template})["spec"]["restartPolicy"] == "Never"
    assert build({})["spec"]["restartPolicy"] == "Never"


def test_template_image_is_used_unless_the_image_is_set_explicitly(tmp_path: Path) -> None:
    template = write_template(
        tmp_path,
        "kind: Pod\nspec:\n  containers:\n  - name: flink-main-container\n"
        "    image: from/template:1\n    imagePullPolicy: Never\n",
    )
    from_template = main_container(build({TEMPLATE_KEY: template}))
    assert (from_template["image"], from_template["imagePullPolicy"]) == (
        "from/template:1",
        "Never",
    )
    for key in ("kubernetes.container.image.ref", "kubernetes.container.image"):
        explicit = main_container(build({TEMPLATE_KEY: template, key: "from/config:2"}))
        assert explicit["image"] == "from/config:2"
    policy = main_container(
        build({TEMPLATE_KEY: template, "kubernetes.container.image.pull-policy": "Always"})
    )
    assert policy["imagePullPolicy"] == "Always"


def test_service_account_precedence(tmp_path: Path) -> None:
    template = write_template(tmp_path, "kind: Pod\nspec:\n  serviceAccountName: from-template\n")
    assert build({})["spec"]["serviceAccountName"] == "default"
    assert build({TEMPLATE_KEY: template})["spec"]["serviceAccountName"] == "from-template"
    fallback = build({TEMPLATE_KEY: template, "kubernetes.service-account": "common"})
    assert fallback["spec"]["serviceAccountName"] == "common"
    both = build(
        {
            TEMPLATE_KEY: template,
            "kubernetes.service-account": "common",
            "kubernetes.taskmanager.service-account": "tm-only",
        }
    )
    assert both["spec"]["serviceAccountName"] == "tm-only"


def test_host_network_explicit_false_beats_the_template(tmp_path: Path) -> None:
    template = write_template(tmp_path, "kind: Pod\nspec:\n  hostNetwork: true\n")
    from_template = build({TEMPLATE_KEY: template})
    assert from_template["spec"]["hostNetwork"] is True
    assert from_template["spec"]["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "ports" not in main_container(from_template)  # host ports would block packing
    explicit = build({TEMPLATE_KEY: template, "kubernetes.hostnetwork.enabled": "false"})
    assert "hostNetwork" not in explicit["spec"]
    assert "dnsPolicy" not in explicit["spec"]
    assert main_container(explicit)["ports"] == [{"name": "rpc", "containerPort": 6122}]


def test_env_precedence_internal_over_config_over_template(tmp_path: Path) -> None:
    template = write_template(
        tmp_path,
        "kind: Pod\nspec:\n  containers:\n  - name: flink-main-container\n    env:\n"
        "    - {name: ONLY_TEMPLATE, value: t}\n    - {name: SHARED, value: t}\n"
        f"    - {{name: {agent_env.TASKMANAGER_SLOTS}, value: '99'}}\n",
    )
    env = env_of(
        build(
            {
                TEMPLATE_KEY: template,
                "taskmanager.numberOfTaskSlots": "3",
                "containerized.taskmanager.env.SHARED": "config",
                f"containerized.taskmanager.env.{agent_env.POD_NAME}": "spoofed",
                "kubernetes.env.secretKeyRef": "env:FROM_SECRET,secret:s,key:k",
            }
        )
    )
    assert env["ONLY_TEMPLATE"] == "t"
    assert env["SHARED"] == "config"
    assert env["FROM_SECRET"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    assert env[agent_env.TASKMANAGER_SLOTS] == "3"
    assert env[agent_env.POD_NAME] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_agent_environment() -> None:
    env = env_of(
        build(
            {
                "taskmanager.numberOfTaskSlots": "4",
                "taskmanager.rpc.port": "6200",
                "heartbeat.interval": "3 s",
                "rmd.taskmanager.resourcemanager-url": "http://rm.example:8090",
                "rmd.auth.token-secret": "rmd-token",
            }
        )
    )
    assert env[agent_env.RESOURCEMANAGER_URL] == "http://rm.example:8090"
    assert env[agent_env.TASKMANAGER_SLOTS] == "4"
    assert env[agent_env.TASKMANAGER_PORT] == "6200"
    assert env[agent_env.HEARTBEAT_INTERVAL] == "3"
    assert env[agent_env.AUTH_TOKEN] == {"secretKeyRef": {"name": "rmd-token", "key": "token"}}
    field_paths = {
        agent_env.POD_NAME: "metadata.name",
        agent_env.POD_NAMESPACE: "metadata.namespace",
        agent_env.POD_IP: "status.podIP",
        agent_env.FLINK_POD_IP: "status.podIP",
        agent_env.NODE_NAME: "spec.nodeName",
    }
    for name, path in field_paths.items():
        assert env[name] == {"fieldRef": {"fieldPath": path}}
    assert agent_env.AUTH_TOKEN not in env_of(build({}))


def test_resources_from_config_always_win_and_other_resources_survive(tmp_path: Path) -> None:
    template = write_template(
        tmp_path,
        "kind: Pod\nspec:\n  containers:\n  - name: flink-main-container\n    resources:\n"
        "      requests: {cpu: '16', memory: 64Gi, ephemeral-storage: 1Gi}\n"
        "      limits: {memory: 64Gi, nvidia.com/gpu: '8'}\n",
    )
    resources = main_container(
        build(
            {
                TEMPLATE_KEY: template,
                "taskmanager.numberOfTaskSlots": "2",
                "taskmanager.memory.process.size": "1g",
                "kubernetes.taskmanager.memory.limit-factor": "2",
                "external-resources": "gpu",
                "external-resource.gpu.amount": "1",
                "external-resource.gpu.kubernetes.config-key": "nvidia.com/gpu",
            }
        )
    )["resources"]
    assert resources["requests"] == {
        "cpu": "2",
        "memory": "1024Mi",
        "ephemeral-storage": "1Gi",
        "nvidia.com/gpu": "1",
    }
    assert resources["limits"] == {"cpu": "2", "memory": "2048Mi", "nvidia.com/gpu": "1"}


@pytest.mark.parametrize(
    ("cpu", "factor", "cpu_request", "cpu_limit"),
    [
        ("1", "1", "1", "1"),
        ("0.5", "1", "500m", "500m"),
        ("0.25", "3", "250m", "750m"),
        ("0.1", "3", "100m", "300m"),
        ("1.0005", "1", "1001m", "1001m"),
        ("2", "1.75", "2", "3500m"),
    ],
)
def test_cpu_quantities(cpu: str, factor: str, cpu_request: str, cpu_limit: str) -> None:
    resources = main_container(
        build(
            {
                "kubernetes.taskmanager.cpu.amount": cpu,
                "kubernetes.taskmanager.cpu.limit-factor": factor,
            }
        )
    )["resources"]
    assert (resources["requests"]["cpu"], resources["limits"]["cpu"]) == (cpu_request, cpu_limit)


def test_memory_limit_is_truncated_to_whole_mebibytes_like_flink() -> None:
    resources = main_container(
        build(
            {
                "taskmanager.memory.process.size": "1001m",
                "kubernetes.taskmanager.memory.limit-factor": "1.5",
            }
        )
    )["resources"]
    assert resources["requests"]["memory"] == "1001Mi"
    assert resources["limits"]["memory"] == "1501Mi"  # 1501.5 truncated


def test_template_main_container_keeps_its_position_and_is_added_when_missing(
    tmp_path: Path,
) -> None:
    with_main = write_template(
        tmp_path,
        "kind: Pod\nspec:\n  containers:\n  - {name: a, image: busybox}\n"
        "  - {name: flink-main-container}\n  - {name: b, image: busybox}\n",
        name="with-main.yaml",
    )
    names = [c["name"] for c in build({TEMPLATE_KEY: with_main})["spec"]["containers"]]
    assert names == ["a", "flink-main-container", "b"]
    without_main = write_template(
        tmp_path, "kind: Pod\nspec:\n  containers:\n  - {name: a, image: busybox}\n"
    )
    names = [c["name"] for c in build({TEMPLATE_KEY: without_main})["spec"]["containers"]]
    assert names == ["flink-main-container", "a"]


def test_main_container_command_replaces_the_templates_command_and_args(tmp_path: Path) -> None:
    template = write_template(
        tmp_path,
        "kind: Pod\nspec:\n  containers:\n  - name: flink-main-container\n"
        "    command: [sleep]\n    args: ['100']\n",
    )
    main = main_container(build({TEMPLATE_KEY: template}))
    assert main["command"][:5] == [
        "rmd",
        "taskmanager",
        "--",
        "/docker-entrypoint.sh",
        "taskmanager",
    ]
    assert "sleep" not in main["command"]
    assert "args" not in main


def test_template_key_fallback_order(tmp_path: Path) -> None:
    paths = {
        key: write_template(tmp_path, f"kind: Pod\nmetadata:\n  labels: {{from: t{i}}}\n", f"{i}.y")
        for i, key in enumerate(
            (
                "kubernetes.pod-template-file.taskmanager",
                "kubernetes.pod-template-file.default",
                "kubernetes.pod-template-file",
            )
        )
    }
    keys = list(paths)
    for index in range(len(keys)):
        config = {key: paths[key] for key in keys[index:]}
        assert build(config)["metadata"]["labels"]["from"] == f"t{index}"


def test_merged_lists_do_not_duplicate(tmp_path: Path) -> None:
    template = write_template(
        tmp_path,
        "kind: Pod\nspec:\n  imagePullSecrets: [{name: reg}]\n"
        "  tolerations: [{key: k, operator: Exists}]\n"
        "  volumes: [{name: certs-volume, emptyDir: {}}]\n",
    )
    pod = build(
        {
            TEMPLATE_KEY: template,
            "kubernetes.container.image.pull-secrets": "reg;other",
            "kubernetes.taskmanager.tolerations": "key:k,operator:Exists;key:j,operator:Exists",
            "kubernetes.secrets": "certs:/certs",
        }
    )
    assert pod["spec"]["imagePullSecrets"] == [{"name": "reg"}, {"name": "other"}]
    assert pod["spec"]["tolerations"] == [
        {"key": "k", "operator": "Exists"},
        {"key": "j", "operator": "Exists"},
    ]
    assert pod["spec"]["volumes"] == [
        {"name": "certs-volume", "secret": {"secretName": "certs"}},
        {"name": "flink-config-volume", "configMap": {"name": "flink-config-my-flink"}},
    ]


def test_external_resources_none_and_resources_without_kubernetes_key() -> None:
    for config in (
        {"external-resources": "none", "external-resource.none.amount": "1"},
        {"external-resources": "fpga", "external-resource.fpga.amount": "1"},
    ):
        requests = main_container(build(config))["resources"]["requests"]
        assert set(requests) == {"cpu", "memory"}


# ---------------------------------------------------------------------------- config.yaml


def test_options_written_as_yaml_structures_in_config_yaml(tmp_path: Path) -> None:
    """Flink >= 1.19 users write maps and lists as YAML; they mean the same as k:v strings."""
    (tmp_path / "config.yaml").write_text(
        """\
kubernetes:
  cluster-id: my-flink
  taskmanager:
    labels: {team: data}
    node-selector:
      disktype: ssd
    tolerations:
      - {key: dedicated, operator: Equal, value: flink, effect: NoSchedule}
      - {key: spot, operator: Exists, effect: NoExecute, tolerationSeconds: 30}
  env:
    secretKeyRef:
      - {env: PASSWORD, secret: db, key: password}
  container:
    image:
      pull-secrets: [reg-a, reg-b]
containerized:
  taskmanager:
    env:
      TZ: UTC
""",
        encoding="utf-8",
    )
    conf = FlinkConfiguration.load(conf_dir=tmp_path)
    pod = TaskManagerPodFactory.from_configuration(
        conf, RmdSettings.from_configuration(conf)
    ).build(pod_name="my-flink-taskmanager-1-1", owner=None)
    assert pod["metadata"]["labels"]["team"] == "data"
    assert pod["spec"]["nodeSelector"] == {"disktype": "ssd"}
    assert pod["spec"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "flink", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
    ]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "reg-a"}, {"name": "reg-b"}]
    env = env_of(pod)
    assert env["PASSWORD"] == {"secretKeyRef": {"name": "db", "key": "password"}}
    assert env["TZ"] == "UTC"


# ---------------------------------------------------------------------------- rmd podspec


def test_podspec_command_prints_the_golden_pod(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = next(case for case in CASES if case.name == "template-rich-with-explicit-config")
    lines = [f"{key}: {value}" for key, value in case.config.items()]  # legacy flat format
    (tmp_path / "flink-conf.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = run_podspec(["--conf-dir", str(tmp_path), "-D", "kubernetes.cluster-id=flink-golden"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    expected = yaml.safe_load((GOLDEN_DIR / f"{case.name}.yaml").read_text(encoding="utf-8"))
    assert yaml.safe_load(out) == expected


def test_podspec_command_name_and_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_podspec(
        [
            "--conf-dir",
            str(GOLDEN_DIR / "templates"),  # exists, holds no configuration file
            "-D",
            "kubernetes.cluster-id=demo",
            "-Dkubernetes.taskmanager.labels=team:data",
            "--name",
            "demo-taskmanager-7-3",
        ]
    )
    out, _ = capsys.readouterr()
    pod = yaml.safe_load(out)
    assert code == 0
    assert pod["metadata"]["name"] == "demo-taskmanager-7-3"
    assert pod["metadata"]["labels"]["team"] == "data"
    assert pod["metadata"]["labels"]["app"] == "demo"


def test_podspec_command_exits_2_with_the_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_podspec(
        [
            "--conf-dir",
            str(tmp_path),
            "-D",
            "kubernetes.cluster-id=demo",
            "-D",
            "kubernetes.taskmanager.tolerations=key:k,effect:NoSchedule",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.startswith("rmd podspec: error: kubernetes.taskmanager.tolerations: ")
    assert "no operator" in err
    assert err.count("\n") == 1


def test_podspec_command_rejects_unknown_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_podspec(["--bogus"]) == 2
    assert "--bogus" in capsys.readouterr().err


# ---------------------------------------------------------------------- real Flink in the pod


def _dynamic_properties(command: list[str]) -> dict[str, str]:
    """The ``-D key=value`` pairs after the entry point's ``taskmanager`` word."""
    words = command[command.index("taskmanager", 2) + 1 :]
    assert words[::2] == ["-D"] * (len(words) // 2), words
    return dict(item.split("=", 1) for item in words[1::2])


def test_flink_taskmanager_gets_the_pod_name_ip_and_the_sizes_rmd_registers() -> None:
    pod = build(
        {
            "taskmanager.numberOfTaskSlots": "2",
            "taskmanager.memory.process.size": "1g",
            "taskmanager.rpc.port": "6200",
        }
    )
    main = main_container(pod)
    assert _dynamic_properties(main["command"]) == {
        "taskmanager.resource-id": f"$({agent_env.POD_NAME})",
        "taskmanager.host": f"$({agent_env.POD_IP})",
        "taskmanager.bind-host": f"$({agent_env.POD_IP})",
        "taskmanager.rpc.port": "6200",
        "taskmanager.numberOfTaskSlots": "2",
        "taskmanager.memory.process.size": "1024m",
    }
    assert main["resources"]["requests"]["memory"] == "1024Mi"
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env[agent_env.TASKMANAGER_SLOTS] == "2"
    assert env[agent_env.TASKMANAGER_PORT] == "6200"


def test_flink_configuration_configmap_is_mounted_where_flink_conf_dir_points() -> None:
    pod = build({"kubernetes.flink.conf.dir": "/etc/flink/"})
    main = main_container(pod)
    assert pod["spec"]["volumes"] == [
        {"name": "flink-config-volume", "configMap": {"name": "flink-config-my-flink"}}
    ]
    assert main["volumeMounts"] == [{"name": "flink-config-volume", "mountPath": "/etc/flink"}]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env[agent_env.FLINK_CONF_DIR] == "/etc/flink"
    assert env[agent_env.SUPERVISE_FLINK] == "true"


def test_a_template_mount_at_the_flink_conf_dir_is_replaced(tmp_path: Path) -> None:
    template = write_template(
        tmp_path,
        "kind: Pod\nspec:\n  containers:\n  - name: flink-main-container\n"
        "    volumeMounts:\n    - {name: mine, mountPath: /opt/flink/conf}\n"
        "  volumes:\n  - name: mine\n    emptyDir: {}\n",
    )
    main = main_container(build({TEMPLATE_KEY: template}))
    assert main["volumeMounts"] == [{"name": "flink-config-volume", "mountPath": "/opt/flink/conf"}]


def test_without_flink_supervision_there_is_no_flink_configuration() -> None:
    pod = build({"rmd.taskmanager.supervise-flink": "false"})
    main = main_container(pod)
    assert main["command"] == ["rmd", "taskmanager"]
    assert "volumes" not in pod["spec"]
    assert "volumeMounts" not in main
    names = {e["name"] for e in main["env"]}
    assert agent_env.FLINK_CONF_DIR not in names
    assert agent_env.SUPERVISE_FLINK not in names


MEMORY = TaskManagerMemory(
    jvm_options=("-Xmx161061270", "-Xms161061270", "-XX:MaxDirectMemorySize=201326592"),
    dynamic_properties=("-D", "taskmanager.memory.task.heap.size=26843542b", "-D", "a=b"),
)


def test_precomputed_memory_starts_kubernetes_taskmanager_sh_with_flinks_variable() -> None:
    conf = FlinkConfiguration({"kubernetes.cluster-id": "my-flink", "kubernetes.entry.path": "/e"})
    settings = RmdSettings.from_configuration(conf)
    slow = TaskManagerPodFactory.from_configuration(conf, settings)
    fast = TaskManagerPodFactory.from_configuration(conf, settings, memory=MEMORY)
    slow_main = main_container(slow.build(pod_name="p", owner=None))
    fast_main = main_container(fast.build(pod_name="p", owner=None))
    given = taskmanager_arguments(conf, settings)
    assert slow_main["command"] == ["rmd", "taskmanager", "--", "/e", "taskmanager", *given]
    # As taskmanager.sh orders them: the computed properties, then the given arguments.
    assert fast_main["command"] == [
        "rmd",
        "taskmanager",
        "--",
        "/e",
        "kubernetes-taskmanager.sh",
        "-D",
        "taskmanager.memory.task.heap.size=26843542b",
        "-D",
        "a=b",
        *given,
    ]
    assert env_of(fast.build(pod_name="p", owner=None))["FLINK_TM_JVM_MEM_OPTS"] == (
        "-Xmx161061270 -Xms161061270 -XX:MaxDirectMemorySize=201326592"
    )
    assert "FLINK_TM_JVM_MEM_OPTS" not in env_of(slow.build(pod_name="p", owner=None))


def test_the_memory_variable_wins_over_a_configured_one() -> None:
    conf = FlinkConfiguration(
        {
            "kubernetes.cluster-id": "my-flink",
            "containerized.taskmanager.env.FLINK_TM_JVM_MEM_OPTS": "-Xmx1m",
        }
    )
    factory = TaskManagerPodFactory.from_configuration(
        conf, RmdSettings.from_configuration(conf), memory=MEMORY
    )
    env = env_of(factory.build(pod_name="p", owner=None))
    assert env["FLINK_TM_JVM_MEM_OPTS"] == MEMORY.jvm_options_env


def test_entrypoint_args_are_part_of_what_the_memory_is_computed_with() -> None:
    conf = FlinkConfiguration(
        {
            "kubernetes.cluster-id": "my-flink",
            "kubernetes.taskmanager.entrypoint.args": "-D taskmanager.memory.managed.fraction=0.1",
        }
    )
    arguments = taskmanager_arguments(conf, RmdSettings.from_configuration(conf))
    assert arguments[-2:] == ("-D", "taskmanager.memory.managed.fraction=0.1")
    assert arguments[-4:-2] == ("-D", "taskmanager.memory.process.size=1728m")


def test_without_flink_supervision_precomputed_memory_changes_nothing() -> None:
    conf = FlinkConfiguration(
        {"kubernetes.cluster-id": "my-flink", "rmd.taskmanager.supervise-flink": "false"}
    )
    factory = TaskManagerPodFactory.from_configuration(
        conf, RmdSettings.from_configuration(conf), memory=MEMORY
    )
    pod = factory.build(pod_name="p", owner=None)
    assert main_container(pod)["command"] == ["rmd", "taskmanager"]
    assert "FLINK_TM_JVM_MEM_OPTS" not in env_of(pod)
