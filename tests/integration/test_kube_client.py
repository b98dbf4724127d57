"""Credentials are found the way kubectl finds them, and they work against a real API server."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from kubernetes_asyncio import client

from rmd.kube.client import (
    KubeConfigError,
    choose_credentials,
    in_cluster_namespace,
    load_kube_configuration,
)
from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo

pytestmark = pytest.mark.integration

CLEAN_ENV = (
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "KUBECONFIG",
    "RMD_SERVICE_ACCOUNT_DIR",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No credentials anywhere; returns the (empty) home directory."""
    for name in CLEAN_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


async def can_list_namespaces(configuration: client.Configuration) -> bool:
    async with client.ApiClient(configuration) as api:
        found = await client.CoreV1Api(api).list_namespace(_request_timeout=REQUEST_TIMEOUT)
    return any(ns.metadata.name == "default" for ns in found.items)


def test_order_is_explicit_then_in_cluster_then_env_then_home(tmp_path: Path) -> None:
    explicit = tmp_path / "explicit"
    from_env = tmp_path / "from-env"
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    for path in (explicit, from_env, home / ".kube" / "config"):
        path.write_text("{}")
    everything = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBECONFIG": str(from_env)}

    chosen = choose_credentials(kubeconfig=explicit, environ=everything, home=home)
    assert chosen.kubeconfig_paths == str(explicit)
    chosen = choose_credentials(kubeconfig=None, environ=everything, home=home)
    assert chosen.kubeconfig_paths is None
    assert chosen.description == "in-cluster"
    chosen = choose_credentials(kubeconfig=None, environ={"KUBECONFIG": str(from_env)}, home=home)
    assert chosen.kubeconfig_paths == str(from_env)
    chosen = choose_credentials(kubeconfig=None, environ={}, home=home)
    assert chosen.kubeconfig_paths == str(home / ".kube" / "config")


def test_kubeconfig_list_skips_missing_files(tmp_path: Path) -> None:
    present = tmp_path / "b"
    present.write_text("{}")
    chosen = choose_credentials(
        kubeconfig=None, environ={"KUBECONFIG": f"{tmp_path / 'a'}:{present}"}, home=tmp_path
    )
    assert chosen.kubeconfig_paths == str(present)


def test_nothing_found_says_what_was_tried_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError) as raised:
        choose_credentials(kubeconfig=None, environ={"KUBECONFIG": "/nope/config"}, home=tmp_path)
    text = str(raised.value)
    assert "\n" not in text
    assert "KUBERNETES_SERVICE_HOST unset" in text
    assert "/nope/config (no such file)" in text
    assert str(tmp_path / ".kube" / "config") in text
    assert "set KUBECONFIG" in text


def test_explicit_kubeconfig_must_exist(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="does not exist"):
        choose_credentials(kubeconfig=tmp_path / "missing", environ={}, home=tmp_path)


async def test_explicit_kubeconfig_works(dev_cluster: DevClusterInfo, clean_env: Path) -> None:
    default_before = client.Configuration.get_default_copy().host
    configuration = await load_kube_configuration(kubeconfig=dev_cluster.kubeconfig)
    assert configuration.host == dev_cluster.server
    assert await can_list_namespaces(configuration)
    # the process-wide default is never touched
    assert client.Configuration.get_default_copy().host == default_before


async def test_kubeconfig_from_the_environment_works(
    dev_cluster: DevClusterInfo, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(dev_cluster.kubeconfig))
    assert await can_list_namespaces(await load_kube_configuration())


async def test_home_kubeconfig_works(dev_cluster: DevClusterInfo, clean_env: Path) -> None:
    (clean_env / ".kube").mkdir()
    shutil.copy(dev_cluster.kubeconfig, clean_env / ".kube" / "config")
    assert await can_list_namespaces(await load_kube_configuration())


async def test_in_cluster_service_account_works(
    dev_cluster: DevClusterInfo, clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(dev_cluster.admin_token)
    shutil.copy(dev_cluster.ca_file, account / "ca.crt")
    (account / "namespace").write_text("flink\n")
    server = urlsplit(dev_cluster.server)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", str(server.hostname))
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
    monkeypatch.setenv("RMD_SERVICE_ACCOUNT_DIR", str(account))
    configuration = await load_kube_configuration()
    assert configuration.host == dev_cluster.server
    assert await can_list_namespaces(configuration)
    assert in_cluster_namespace() == "flink"


async def test_in_cluster_without_a_token_is_a_clear_error(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("RMD_SERVICE_ACCOUNT_DIR", str(tmp_path / "empty"))
    with pytest.raises(KubeConfigError) as raised:
        await load_kube_configuration()
    text = str(raised.value)
    assert "\n" not in text
    assert "token" in text
    assert str(tmp_path / "empty") in text


async def test_broken_kubeconfig_is_a_clear_error(clean_env: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\ncontexts: []\n")
    with pytest.raises(KubeConfigError) as raised:
        await load_kube_configuration(kubeconfig=broken)
    assert "\n" not in str(raised.value)
    assert str(broken) in str(raised.value)
