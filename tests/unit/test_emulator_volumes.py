"""ConfigMap and Secret volumes as the kubelet projects them (pure planning)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from rmd_dev.emulator.env import SERVICE_ACCOUNT_MOUNT_PATH
from rmd_dev.emulator.volumes import (
    VolumeError,
    container_mounts,
    object_values,
    pod_volume_sources,
    referenced_volume_sources,
    volume_files,
)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


POD: dict[str, Any] = {
    "spec": {
        "volumes": [
            {"name": "conf", "configMap": {"name": "flink-config-x"}},
            {
                "name": "picked",
                "configMap": {
                    "name": "other",
                    "items": [{"key": "a", "path": "sub/a.txt", "mode": 0o600}],
                    "defaultMode": 0o640,
                },
            },
            {"name": "creds", "secret": {"secretName": "s", "optional": True}},
            {"name": "token", "secret": {"secretName": "default-token-abc"}},
            {"name": "scratch", "emptyDir": {}},
        ],
        "containers": [
            {
                "name": "main",
                "volumeMounts": [
                    {"name": "conf", "mountPath": "/opt/flink/conf/"},
                    {"name": "picked", "mountPath": "/etc/picked", "readOnly": False},
                    {"name": "creds", "mountPath": "/etc/creds", "subPath": "x"},
                    {"name": "token", "mountPath": SERVICE_ACCOUNT_MOUNT_PATH},
                    {"name": "scratch", "mountPath": "/scratch"},
                ],
            }
        ],
    }
}


def test_mounts_of_config_map_and_secret_volumes_are_read_only_and_normalised() -> None:
    sources = pod_volume_sources(POD)
    assert set(sources) == {"conf", "picked", "creds", "token"}
    mounts = container_mounts(POD["spec"]["containers"][0], sources=sources)
    assert [(m.volume, m.mount_path, m.read_only) for m in mounts.mounts] == [
        ("conf", "/opt/flink/conf", True),
        ("picked", "/etc/picked", True),
    ]
    assert len(mounts.ignored) == 1
    assert "subPath" in mounts.ignored[0]
    config_maps, secrets = referenced_volume_sources(POD["spec"]["containers"], sources=sources)
    assert (config_maps, secrets) == (frozenset({"flink-config-x", "other"}), frozenset())


def test_every_key_becomes_a_file_with_the_default_mode() -> None:
    source = pod_volume_sources(POD)["conf"]
    values = object_values(
        {"data": {"config.yaml": "a: 'b'\n", "log4j.properties": "x"}}, kind="ConfigMap"
    )
    assert volume_files(source, values) == {
        "config.yaml": (b"a: 'b'\n", 0o644),
        "log4j.properties": (b"x", 0o644),
    }


def test_items_pick_keys_paths_and_modes() -> None:
    source = pod_volume_sources(POD)["picked"]
    files = volume_files(source, {"a": b"1", "b": b"2"})
    assert files == {"sub/a.txt": (b"1", 0o600)}
    with pytest.raises(VolumeError, match="non-existent config key: a"):
        volume_files(source, {"b": b"2"})


def test_missing_source_is_the_kubelets_mount_error_unless_optional() -> None:
    with pytest.raises(VolumeError) as caught:
        volume_files(pod_volume_sources(POD)["conf"], None)
    assert str(caught.value) == (
        'MountVolume.SetUp failed for volume "conf" : configmap "flink-config-x" not found'
    )
    assert volume_files(pod_volume_sources(POD)["creds"], None) == {}


def test_secret_and_binary_data_are_decoded() -> None:
    secret = object_values({"data": {"token": _b64("t0k"), "bad": "%%%"}}, kind="Secret")
    assert secret == {"token": b"t0k"}
    config_map = object_values(
        {"data": {"text": "x"}, "binaryData": {"blob": _b64("\x00\x01")}}, kind="ConfigMap"
    )
    assert config_map == {"text": b"x", "blob": b"\x00\x01"}


@pytest.mark.parametrize("path", ["../escape", "/abs", "a/../../b", ""])
def test_item_paths_must_stay_inside_the_volume(path: str) -> None:
    pod = {
        "spec": {
            "volumes": [
                {"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": path}]}}
            ]
        }
    }
    with pytest.raises(VolumeError, match="invalid path"):
        volume_files(pod_volume_sources(pod)["v"], {"k": b"x"})
