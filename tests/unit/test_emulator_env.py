"""The container environment the emulator builds, following the kubelet (v1.20)."""

from __future__ import annotations

import base64
from fractions import Fraction
from typing import Any

import pytest

from rmd_dev.emulator.env import (
    ApiServerAddress,
    EnvResolutionError,
    EnvSources,
    expand,
    expand_command,
    needs_node_allocatable,
    parse_quantity,
    referenced_sources,
    resolve_container_env,
    secret_values,
    service_account_secret_name,
)

API = ApiServerAddress(host="127.0.0.1", port=6443)
INHERITED = {"PATH": "/venv/bin:/usr/bin", "HOME": "/root", "SECRET_OF_EMULATOR": "x"}


def make_pod(*env: dict[str, Any], **container: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "tm-1",
            "namespace": "ns1",
            "uid": "u-1",
            "labels": {"app": "flink", "component": "taskmanager"},
            "annotations": {"note": 'say "hi"'},
        },
        "spec": {
            "nodeName": "rmd-node-2",
            "serviceAccountName": "flink",
            "containers": [{"name": "main", "image": "flink", "env": list(env), **container}],
        },
    }


def resolve(
    pod: dict[str, Any],
    *,
    sources: EnvSources | None = None,
    allocatable: dict[str, str] | None = None,
    account_dir: str | None = None,
) -> dict[str, str]:
    return resolve_container_env(
        pod,
        pod["spec"]["containers"][0],
        pod_ip="127.1.0.7",
        host_ip="127.0.0.1",
        sources=sources or EnvSources(),
        api_server=API,
        inherited=INHERITED,
        service_account_dir=account_dir,
        node_allocatable=allocatable,
    )


def field(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def test_downward_api_field_refs() -> None:
    env = resolve(
        make_pod(
            field("NAME", "metadata.name"),
            field("NS", "metadata.namespace"),
            field("UID", "metadata.uid"),
            field("IP", "status.podIP"),
            field("IPS", "status.podIPs"),
            field("HOST", "status.hostIP"),
            field("NODE", "spec.nodeName"),
            field("SA", "spec.serviceAccountName"),
            field("APP", "metadata.labels['app']"),
            field("NOTE", "metadata.annotations['note']"),
            field("NONE", "metadata.labels['missing']"),
            field("LABELS", "metadata.labels"),
        )
    )
    assert env["NAME"] == "tm-1"
    assert env["NS"] == "ns1"
    assert env["UID"] == "u-1"
    assert env["IP"] == env["IPS"] == "127.1.0.7"
    assert env["HOST"] == "127.0.0.1"
    assert env["NODE"] == "rmd-node-2"
    assert env["SA"] == "flink"
    assert env["APP"] == "flink"
    assert env["NOTE"] == 'say "hi"'
    assert env["NONE"] == ""
    assert env["LABELS"] == 'app="flink"\ncomponent="taskmanager"'


def test_unsupported_field_path_is_a_config_error() -> None:
    with pytest.raises(EnvResolutionError, match=r"unsupported fieldPath: spec\.hostname"):
        resolve(make_pod(field("X", "spec.hostname")))
    with pytest.raises(EnvResolutionError, match="does not support subscript"):
        resolve(make_pod(field("X", "metadata.name['x']")))


def key_ref(kind: str, name: str, source: str, key: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "valueFrom": {kind: {"name": source, "key": key, **extra}}}


def test_config_map_and_secret_key_refs() -> None:
    sources = EnvSources(
        config_maps={"settings": {"slots": "4"}},
        secrets={"creds": secret_values({"data": {"token": base64.b64encode(b"s3cr3t").decode()}})},
    )
    env = resolve(
        make_pod(
            key_ref("configMapKeyRef", "SLOTS", "settings", "slots"),
            key_ref("secretKeyRef", "TOKEN", "creds", "token"),
        ),
        sources=sources,
    )
    assert env["SLOTS"] == "4"
    assert env["TOKEN"] == "s3cr3t"


@pytest.mark.parametrize(
    ("variable", "sources", "message"),
    [
        (
            key_ref("configMapKeyRef", "A", "absent", "k"),
            EnvSources(config_maps={"absent": None}),
            'configmap "absent" not found',
        ),
        (
            key_ref("configMapKeyRef", "A", "cm", "nokey"),
            EnvSources(config_maps={"cm": {"k": "v"}}),
            "couldn't find key nokey in ConfigMap ns1/cm",
        ),
        (
            key_ref("secretKeyRef", "A", "absent", "k"),
            EnvSources(secrets={"absent": None}),
            'secret "absent" not found',
        ),
        (
            key_ref("secretKeyRef", "A", "s", "nokey"),
            EnvSources(secrets={"s": {"k": "v"}}),
            "couldn't find key nokey in Secret ns1/s",
        ),
    ],
)
def test_missing_required_sources_give_the_kubelets_message(
    variable: dict[str, Any], sources: EnvSources, message: str
) -> None:
    with pytest.raises(EnvResolutionError) as caught:
        resolve(make_pod(variable), sources=sources)
    assert str(caught.value) == message


def test_optional_missing_sources_leave_the_variable_out() -> None:
    env = resolve(
        make_pod(
            key_ref("configMapKeyRef", "A", "absent", "k", optional=True),
            key_ref("secretKeyRef", "B", "s", "nokey", optional=True),
        ),
        sources=EnvSources(config_maps={"absent": None}, secrets={"s": {"k": "v"}}),
    )
    assert "A" not in env
    assert "B" not in env


def test_env_from_with_prefix_is_overridden_by_env_and_skips_invalid_names() -> None:
    pod = make_pod(
        {"name": "CFG_MODE", "value": "explicit"},
        envFrom=[
            {"configMapRef": {"name": "cm"}, "prefix": "CFG_"},
            {"secretRef": {"name": "s"}},
            {"configMapRef": {"name": "gone", "optional": True}},
        ],
    )
    env = resolve(
        pod,
        sources=EnvSources(
            config_maps={"cm": {"MODE": "from-map", "LEVEL": "3", "bad key": "x"}, "gone": None},
            secrets={"s": {"PASSWORD": "pw"}},
        ),
    )
    assert env["CFG_MODE"] == "explicit"
    assert env["CFG_LEVEL"] == "3"
    assert env["PASSWORD"] == "pw"
    assert not any(" " in name for name in env)


def test_env_from_missing_required_source() -> None:
    pod = make_pod(envFrom=[{"secretRef": {"name": "absent"}}])
    with pytest.raises(EnvResolutionError, match=r'^secret "absent" not found$'):
        resolve(pod, sources=EnvSources(secrets={"absent": None}))


def test_dollar_references_see_earlier_variables_and_service_variables() -> None:
    env = resolve(
        make_pod(
            field("POD", "metadata.name"),
            {"name": "ADDR", "value": "$(POD):$(KUBERNETES_SERVICE_PORT)"},
            {"name": "LATER", "value": "$(NOT_YET)"},
            {"name": "NOT_YET", "value": "x"},
            {"name": "ESCAPED", "value": "$$(POD) costs $$5"},
        )
    )
    assert env["ADDR"] == "tm-1:6443"
    assert env["LATER"] == "$(NOT_YET)"
    assert env["ESCAPED"] == "$(POD) costs $5"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "1"),
        ("x$(A)y$(B)z", "x1y2z"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("$$(A)", "$(A)"),
        ("$(A", "$(A"),
        ("cost: $5", "cost: $5"),
        ("ends with $", "ends with $"),
        ("", ""),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "2"}) == expected


def test_expand_command() -> None:
    assert expand_command(["echo", "$(A)", "$(B)"], {"A": "x"}) == ["echo", "x", "$(B)"]


def resource(name: str, ref: str, divisor: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"resource": ref}
    if divisor is not None:
        spec["divisor"] = divisor
    return {"name": name, "valueFrom": {"resourceFieldRef": spec}}


def test_resource_field_refs_round_up_like_the_kubelet() -> None:
    pod = make_pod(
        resource("CPU", "limits.cpu"),
        resource("MILLICPU", "requests.cpu", "1m"),
        resource("MEM_MI", "limits.memory", "1Mi"),
        resource("MEM", "requests.memory"),
        resources={"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "250m"}},
    )
    env = resolve(pod)
    assert env["CPU"] == "1"
    assert env["MILLICPU"] == "250"
    assert env["MEM_MI"] == "1024"
    assert env["MEM"] == "0"


def test_missing_limits_come_from_node_allocatable() -> None:
    pod = make_pod(resource("CPU", "limits.cpu"), resource("MEM", "limits.memory", "1Gi"))
    container = pod["spec"]["containers"][0]
    assert needs_node_allocatable([container])
    env = resolve(pod, allocatable={"cpu": "16", "memory": "64Gi"})
    assert env["CPU"] == "16"
    assert env["MEM"] == "64"
    with_limits = make_pod(resource("CPU", "limits.cpu"), resources={"limits": {"cpu": "2"}})
    assert not needs_node_allocatable(with_limits["spec"]["containers"])


def test_unsupported_resource_is_a_config_error() -> None:
    with pytest.raises(EnvResolutionError, match="unsupported container resource"):
        resolve(make_pod(resource("X", "limits.gpu")))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Fraction(1, 2)),
        ("2", Fraction(2)),
        ("1.5", Fraction(3, 2)),
        ("2Gi", Fraction(2 * 1024**3)),
        ("1Ki", Fraction(1024)),
        ("1k", Fraction(1000)),
        ("3M", Fraction(3_000_000)),
        ("1e3", Fraction(1000)),
        ("1E", Fraction(10**18)),
        ("100n", Fraction(1, 10**7)),
    ],
)
def test_parse_quantity(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Xi", "1.2.3"])
def test_parse_quantity_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


def test_service_and_runtime_variables_and_nothing_else_inherited() -> None:
    env = resolve(make_pod(), account_dir="/state/pods/ns1/tm-1/serviceaccount")
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == env["KUBERNETES_SERVICE_PORT_HTTPS"] == "6443"
    assert env["KUBERNETES_PORT"] == "tcp://127.0.0.1:6443"
    assert env["RMD_SERVICE_ACCOUNT_DIR"] == "/state/pods/ns1/tm-1/serviceaccount"
    assert env["PATH"] == "/venv/bin:/usr/bin"
    assert env["HOME"] == "/root"
    assert env["HOSTNAME"] == "tm-1"
    assert "SECRET_OF_EMULATOR" not in env
    assert "RMD_SERVICE_ACCOUNT_DIR" not in resolve(make_pod())


def test_container_env_overrides_service_and_runtime_variables() -> None:
    env = resolve(
        make_pod(
            {"name": "PATH", "value": "/opt/bin"}, {"name": "KUBERNETES_SERVICE_HOST", "value": "h"}
        )
    )
    assert env["PATH"] == "/opt/bin"
    assert env["KUBERNETES_SERVICE_HOST"] == "h"


def test_referenced_sources_lists_what_to_fetch() -> None:
    pod = make_pod(
        key_ref("configMapKeyRef", "A", "cm-a", "k"),
        key_ref("secretKeyRef", "B", "s-b", "k"),
        field("C", "metadata.name"),
        envFrom=[{"configMapRef": {"name": "cm-c"}}, {"secretRef": {"name": "s-d"}}],
    )
    wanted = referenced_sources(pod["spec"]["containers"])
    assert wanted.config_maps == frozenset({"cm-a", "cm-c"})
    assert wanted.secrets == frozenset({"s-b", "s-d"})


def test_secret_values_are_decoded_and_broken_ones_skipped() -> None:
    values = secret_values({"data": {"ok": base64.b64encode(b"value").decode(), "bad": "%%%"}})
    assert values == {"ok": "value"}


def test_service_account_secret_comes_from_the_admission_mount() -> None:
    pod = make_pod(
        volumeMounts=[
            {
                "name": "flink-token-abcde",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            }
        ]
    )
    pod["spec"]["volumes"] = [
        {"name": "flink-token-abcde", "secret": {"secretName": "flink-token-abcde"}}
    ]
    assert service_account_secret_name(pod, pod["spec"]["containers"][0]) == "flink-token-abcde"
    opted_out = make_pod()
    assert service_account_secret_name(opted_out, opted_out["spec"]["containers"][0]) is None
