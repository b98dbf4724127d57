"""The objects ``rmd session start`` creates, built from configuration (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rmd.config.flinkconf import ConfigError, FlinkConfiguration
from rmd.config.jobmanager_options import JobManagerPodOptions
from rmd.config.settings import RmdSettings
from rmd.kube.podspec import OwnerReference, TaskManagerPodFactory
from rmd.kube.podtemplate import empty_pod_template, load_pod_template
from rmd.session.access import Permission, denial_message
from rmd.session.manifests import ApplicationProgram, SessionPlan, session_plan

OWNER = OwnerReference(api_version="apps/v1", kind="Deployment", name="s1", uid="u-1")


def _plan(
    values: dict[str, str],
    *,
    template: Path | None = None,
    application: ApplicationProgram | None = None,
) -> SessionPlan:
    conf = FlinkConfiguration({"kubernetes.cluster-id": "s1", **values})
    settings = RmdSettings.from_configuration(conf)
    taskmanager_pods = TaskManagerPodFactory.from_configuration(conf, settings)
    jobmanager = JobManagerPodOptions.from_configuration(conf)
    pod_template = (
        empty_pod_template()
        if template is None
        else load_pod_template(template, key="kubernetes.pod-template-file.jobmanager")
    )
    return session_plan(
        conf,
        settings,
        taskmanager=taskmanager_pods.options,
        jobmanager=jobmanager,
        template=pod_template,
        log_files={"log4j-console.properties": "rootLogger.level = INFO\n"},
        taskmanager_pod_template=taskmanager_pods.pod_template_text,
        application=application,
    )


def _main(plan: SessionPlan) -> dict[str, Any]:
    container: dict[str, Any] = plan.deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_defaults_are_flinks_native_mode() -> None:
    plan = _plan({})
    deployment = plan.deployment
    selector = {"type": "flink-native-kubernetes", "app": "s1", "component": "jobmanager"}
    assert deployment["metadata"]["name"] == "s1"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["selector"] == {"matchLabels": selector}
    assert deployment["spec"]["template"]["metadata"]["labels"] == selector
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8090",
        "prometheus.io/path": "/metrics",
    }
    main = _main(plan)
    assert main["name"] == "flink-main-container"
    assert main["command"] == ["/rmd-entrypoint.sh"]
    assert main["args"] == ["jobmanager"]
    assert main["resources"]["requests"] == {"cpu": "1", "memory": "1600Mi"}
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {
        "rest": 8081,
        "jobmanager-rpc": 6123,
        "blobserver": 6124,
        "rmd": 8090,
    }
    assert {"name": "flink-config-volume", "mountPath": "/opt/flink/conf"} in main["volumeMounts"]
    assert main["readinessProbe"]["httpGet"] == {"path": "/config", "port": "rest"}
    assert "livenessProbe" not in main
    internal, rest = plan.internal_service, plan.rest_service
    assert internal["spec"]["clusterIP"] == "None"
    assert internal["spec"]["selector"] == selector
    assert rest["metadata"]["name"] == "s1-rest"
    assert rest["spec"]["type"] == "ClusterIP"
    assert rest["spec"]["ports"] == [
        {"name": "rest", "port": 8081, "targetPort": 8081, "protocol": "TCP"}
    ]


def test_an_application_cluster_runs_the_jar_and_says_so_in_its_configuration() -> None:
    program = ApplicationProgram(
        jar_uri="local:///opt/flink/usrlib/job.jar", main_class="a.Job", arguments=("-x", "1")
    )
    plan = _plan(
        {"kubernetes.jobmanager.entrypoint.args": "-D rest.address=1.2.3.4"}, application=program
    )
    assert plan.kind == "application"
    assert plan.shutdown_on_application_finish is True
    assert _main(plan)["args"] == [
        "application",
        "--jars",
        "local:///opt/flink/usrlib/job.jar",
        "--job-classname",
        "a.Job",
        "-D",
        "rest.address=1.2.3.4",
        "--",
        "-x",
        "1",
    ]
    config = yaml.safe_load(plan.config_map.data["config.yaml"])
    assert config["execution.target"] == "kubernetes-application"
    # Everything else is the session cluster's.
    session = _plan({"kubernetes.jobmanager.entrypoint.args": "-D rest.address=1.2.3.4"})
    assert session.kind == "session"
    assert plan.internal_service == session.internal_service
    assert plan.rest_service == session.rest_service
    assert _main(session)["args"] == ["jobmanager", "-D", "rest.address=1.2.3.4"]


def test_an_application_cluster_without_class_or_arguments_and_told_to_stay() -> None:
    program = ApplicationProgram(jar_uri="local:///j.jar", main_class=None)
    plan = _plan({"execution.shutdown-on-application-finish": "false"}, application=program)
    assert _main(plan)["args"] == ["application", "--jars", "local:///j.jar", "--"]
    assert plan.shutdown_on_application_finish is False
    config = yaml.safe_load(plan.config_map.data["config.yaml"])
    assert config["execution.shutdown-on-application-finish"] in (False, "false")


def test_jobmanager_options_reach_the_pod() -> None:
    plan = _plan(
        {
            "kubernetes.jobmanager.replicas": "2",
            "high-availability.type": "kubernetes",  # more than one replica needs it
            "kubernetes.jobmanager.cpu.amount": "0.5",
            "kubernetes.jobmanager.cpu.limit-factor": "2",
            "jobmanager.memory.process.size": "1g",
            "kubernetes.service-account": "rmd",
            "kubernetes.jobmanager.labels": "team:a",
            "kubernetes.jobmanager.annotations": "emulator.rmd.dev/run:process",
            "kubernetes.jobmanager.node-selector": "disk:ssd",
            "kubernetes.jobmanager.tolerations": "key:k,operator:Exists,effect:NoSchedule",
            "containerized.master.env.FLINK_HOME": "/opt/f",
            "kubernetes.jobmanager.entrypoint.args": "-D rest.address=$(_POD_IP_ADDRESS)",
            "rmd.jobmanager.entry-path": "/x/rmd-entrypoint.sh",
            "kubernetes.rest-service.exposed.type": "nodeport",
        }
    )
    spec = plan.deployment["spec"]
    pod = spec["template"]
    assert spec["replicas"] == 2
    assert pod["metadata"]["labels"]["team"] == "a"
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8090",
        "prometheus.io/path": "/metrics",
        "emulator.rmd.dev/run": "process",
    }
    assert pod["spec"]["serviceAccountName"] == "rmd"
    assert pod["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert pod["spec"]["tolerations"] == [
        {"key": "k", "operator": "Exists", "effect": "NoSchedule"}
    ]
    main = _main(plan)
    assert main["command"] == ["/x/rmd-entrypoint.sh"]
    assert main["args"] == ["jobmanager", "-D", "rest.address=$(_POD_IP_ADDRESS)"]
    assert main["resources"]["requests"] == {"cpu": "500m", "memory": "1024Mi"}
    assert main["resources"]["limits"] == {"cpu": "1", "memory": "1024Mi"}
    env = {e["name"]: e for e in main["env"]}
    assert env["FLINK_HOME"] == {"name": "FLINK_HOME", "value": "/opt/f"}
    assert env["_POD_IP_ADDRESS"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert plan.rest_service["spec"]["type"] == "NodePort"


def test_scrape_annotations_follow_the_daemon_port_and_can_be_overridden() -> None:
    plan = _plan(
        {"rmd.rest.port": "9100", "kubernetes.jobmanager.annotations": "prometheus.io/scrape:false"}
    )
    annotations = plan.deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "false",
        "prometheus.io/port": "9100",
        "prometheus.io/path": "/metrics",
    }


def test_everything_but_the_deployment_is_owned_by_it() -> None:
    owned = _plan({}).owned(OWNER)
    assert [(kind, m["metadata"]["name"]) for kind, m in owned] == [
        ("ConfigMap", "flink-config-s1"),
        ("Service", "s1"),
        ("Service", "s1-rest"),
    ]
    for _, manifest in owned:
        assert manifest["metadata"]["ownerReferences"] == [OWNER.to_manifest()]
        assert manifest["metadata"]["labels"] == {"type": "flink-native-kubernetes", "app": "s1"}


def test_config_map_holds_the_configuration_and_the_daemon_follows_flink() -> None:
    plan = _plan({"rest.port": "8085"})
    data = plan.config_map.data
    config = yaml.safe_load(data["config.yaml"])
    assert config["kubernetes.cluster-id"] == "s1"
    assert config["rmd.flink.rest-url"] == "http://localhost:8085"
    assert data["log4j-console.properties"] == "rootLogger.level = INFO\n"
    explicit = _plan({"rmd.flink.rest-url": "http://elsewhere:1"}).config_map.data
    assert yaml.safe_load(explicit["config.yaml"])["rmd.flink.rest-url"] == "http://elsewhere:1"


def test_a_session_cluster_waits_for_adopted_taskmanagers_after_a_restart_unless_told() -> None:
    key = "resourcemanager.previous-worker.recovery.timeout"
    config = yaml.safe_load(_plan({}).config_map.data["config.yaml"])
    assert config[key] == "1 min"  # not Flink's 0 s: restarts stay exact
    explicit = _plan({key: "0 s"}).config_map.data
    assert yaml.safe_load(explicit["config.yaml"])[key] == "0 s"


def test_pod_template_is_merged(tmp_path: Path) -> None:
    template = tmp_path / "jm.yaml"
    template.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"labels": {"from": "template"}},
                "spec": {
                    "securityContext": {"runAsUser": 9999},
                    "containers": [
                        {
                            "name": "flink-main-container",
                            "workingDir": "/w",
                            "readinessProbe": {"tcpSocket": {"port": 6123}},
                        },
                        {"name": "sidecar", "image": "busybox"},
                    ],
                },
            }
        )
    )
    plan = _plan({}, template=template)
    pod = plan.deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["from"] == "template"
    assert pod["metadata"]["labels"]["component"] == "jobmanager"
    assert pod["spec"]["securityContext"] == {"runAsUser": 9999}
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == ["flink-main-container", "sidecar"]
    assert _main(plan)["workingDir"] == "/w"
    assert _main(plan)["readinessProbe"] == {"tcpSocket": {"port": 6123}}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("kubernetes.jobmanager.replicas", "0"),
        ("kubernetes.jobmanager.cpu.amount", "-1"),
        ("kubernetes.rest-service.exposed.type", "Ingress"),
        ("jobmanager.memory.process.size", "lots"),
        ("containerized.master.env.1BAD", "x"),
    ],
)
def test_bad_jobmanager_values_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _plan({key: value})
    assert key in str(raised.value)


def test_denial_names_verb_resource_and_the_fix() -> None:
    text = denial_message(Permission("create", "deployments", "apps"), namespace="ns")
    assert "you may not create deployments.apps in namespace ns" in text
    assert "kubectl -n ns create role rmd-session --verb=create --resource=deployments.apps" in text
    assert "\n" not in text


def test_the_taskmanager_pod_template_goes_into_the_configmap_the_jobmanager_mounts(
    tmp_path: Path,
) -> None:
    template = tmp_path / "tm.yaml"
    text = "apiVersion: v1\nkind: Pod\nmetadata:\n  labels:\n    team: a\n"
    template.write_text(text)
    plan = _plan({"kubernetes.pod-template-file.taskmanager": str(template)})
    data = plan.config_map.data
    assert data["taskmanager-pod-template.yaml"] == text
    mounted_at = next(
        m["mountPath"] for m in _main(plan)["volumeMounts"] if m["name"] == "flink-config-volume"
    )
    config = yaml.safe_load(data["config.yaml"])
    assert config["kubernetes.pod-template-file.taskmanager"] == (
        f"{mounted_at}/taskmanager-pod-template.yaml"
    )
    assert "taskmanager-pod-template.yaml" not in _plan({}).config_map.data
