"""Shared fixtures: one real local control plane per test session, a namespace per test.

The control plane is started with the same command users run (``rmd dev-cluster up``) in a
temporary directory and stopped with ``down`` at the end of the session; the teardown then
checks that none of its processes remain and that its ports are free. Set
``RMD_TEST_CLUSTER_DIR`` to reuse a cluster you started yourself (it is then left running).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings as hypothesis_settings
from kubernetes_asyncio import client, config

from rmd_dev.cluster import (
    ClusterState,
    Component,
    port_is_free,
    process_alive,
    write_kubeconfig,
)
from rmd_dev.provision import FlinkInstall
from tests.support import flink as flink_support
from tests.support.background import Background
from tests.support.faultproxy import FaultProxy
from tests.support.waiting import eventually

REQUEST_TIMEOUT = (5, 30)

# CI runs the property tests on a fixed sequence of examples, so a red run can be repeated;
# locally each run explores new ones.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None, print_blob=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


@dataclass(frozen=True)
class DevClusterInfo:
    dir: Path
    kubeconfig: Path
    server: str
    ca_file: Path
    admin_token: str
    etcd_url: str
    node_names: list[str]
    components: list[Component]


def _load_info(directory: Path) -> DevClusterInfo:
    state = ClusterState.load(directory / "state.json")
    return DevClusterInfo(
        dir=directory,
        kubeconfig=Path(state.kubeconfig),
        server=state.server,
        ca_file=directory / "pki" / "ca.crt",
        admin_token=(directory / "pki" / "admin.token").read_text().strip(),
        etcd_url=state.etcd_url,
        node_names=list(state.node_names),
        components=list(state.components),
    )


def _devcluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rmd_dev", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=900,
        check=False,
    )


@pytest.fixture
async def background() -> AsyncIterator[Background]:
    """Start tasks with ``background.start(coro)``; they are cancelled when the test ends."""
    tasks = Background()
    try:
        yield tasks
    finally:
        await tasks.close()


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevClusterInfo]:
    reuse = os.environ.get("RMD_TEST_CLUSTER_DIR")
    if reuse:
        yield _load_info(Path(reuse).resolve())
        return
    directory = tmp_path_factory.mktemp("devcluster")
    up = _devcluster("up", "--dir", str(directory), "--nodes", "3")
    sys.stderr.write(up.stderr)
    if up.returncode != 0:
        _devcluster("down", "--dir", str(directory))
        pytest.fail(f"rmd dev-cluster up failed:\n{up.stderr}\n{up.stdout}", pytrace=False)
    info = _load_info(directory)
    try:
        yield info
    finally:
        down = _devcluster("down", "--dir", str(directory))
        alive = [c.name for c in info.components if process_alive(c)]
        busy = [p for c in info.components for p in c.ports.values() if not port_is_free(p)]
        problems = []
        if down.returncode != 0:
            problems.append(f"down failed: {down.stderr}")
        if alive:
            problems.append(f"processes still alive after down: {alive}")
        if busy:
            problems.append(f"ports still busy after down: {busy}")
        if problems:
            pytest.fail("; ".join(problems), pytrace=False)


def manifest(obj: dict[str, Any]) -> Any:
    """A Kubernetes object as a plain dict: the client accepts one wherever its stubs ask for a
    model class (V1Pod, V1Namespace, ...)."""
    return obj


async def _api_client(kubeconfig: Path) -> client.ApiClient:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


@pytest.fixture
async def kube_api(dev_cluster: DevClusterInfo) -> AsyncIterator[client.ApiClient]:
    api = await _api_client(dev_cluster.kubeconfig)
    async with api:
        yield api


@pytest.fixture
async def proxy(dev_cluster: DevClusterInfo) -> AsyncIterator[FaultProxy]:
    """A fault-injecting proxy in front of the API server."""
    async with FaultProxy(upstream=dev_cluster.server, ca_file=dev_cluster.ca_file) as running:
        yield running


@pytest.fixture
async def proxied_api(
    proxy: FaultProxy, dev_cluster: DevClusterInfo
) -> AsyncIterator[client.ApiClient]:
    """An admin ApiClient that talks to the API server through :func:`proxy`."""
    async with client.ApiClient(proxy.configuration(token=dev_cluster.admin_token)) as api:
        yield api


@pytest.fixture
def proxied_kubeconfig(proxy: FaultProxy, dev_cluster: DevClusterInfo, tmp_path: Path) -> Path:
    """An admin kubeconfig whose server is :func:`proxy` (for a daemon behind the faults)."""
    return write_kubeconfig(
        tmp_path / "through-proxy.kubeconfig", server=proxy.url, token=dev_cluster.admin_token
    )


async def wait_for_service_account(
    core: client.CoreV1Api, *, namespace: str, name: str = "default", timeout: float = 30.0
) -> Any:
    """Wait until the service account exists and has its token secret (controller-manager)."""
    found: list[Any] = []

    async def has_token() -> bool:
        try:
            account = await core.read_namespaced_service_account(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            return False
        found[:] = [account]
        return bool(account.secrets)

    await eventually(
        has_token, what=f"service account {namespace}/{name} with its token", timeout=timeout
    )
    return found[0]


async def create_cpu_limit_range(
    core: client.CoreV1Api, *, namespace: str, name: str, max_cpu: str
) -> None:
    """A LimitRange: no container may have a CPU limit above ``max_cpu`` (LimitRanger, an
    admission plugin, refuses such a pod with 403 Forbidden)."""
    await core.create_namespaced_limit_range(
        namespace,
        body=manifest(
            {
                "metadata": {"name": name},
                "spec": {"limits": [{"type": "Container", "max": {"cpu": max_cpu}}]},
            }
        ),
        _request_timeout=REQUEST_TIMEOUT,
    )


async def create_pod_quota(core: client.CoreV1Api, *, namespace: str, name: str, pods: int) -> None:
    """A ResourceQuota of ``pods`` pods, returned once the controller-manager has filled in its
    status (only then does admission enforce it)."""
    await core.create_namespaced_resource_quota(
        namespace,
        body=manifest({"metadata": {"name": name}, "spec": {"hard": {"pods": str(pods)}}}),
        _request_timeout=REQUEST_TIMEOUT,
    )

    async def quota_enforced() -> bool:
        quota = await core.read_namespaced_resource_quota(
            name, namespace, _request_timeout=REQUEST_TIMEOUT
        )
        return bool(quota.status and quota.status.hard)

    await eventually(quota_enforced, what=f"the controller-manager to fill in quota {name}")


@pytest.fixture
async def namespace(kube_api: client.ApiClient) -> AsyncIterator[str]:
    core = client.CoreV1Api(kube_api)
    name = f"t-{secrets.token_hex(4)}"
    await core.create_namespace(
        body=manifest({"metadata": {"name": name, "labels": {"rmd.dev/test": "true"}}}),
        _request_timeout=REQUEST_TIMEOUT,
    )
    await wait_for_service_account(core, namespace=name)
    try:
        yield name
    finally:
        await core.delete_namespace(name, _request_timeout=REQUEST_TIMEOUT)


async def service_account_token(core: client.CoreV1Api, *, namespace: str, name: str) -> str:
    """The bearer token of a service account (its token Secret, made by the controller-manager)."""
    account = await wait_for_service_account(core, namespace=namespace, name=name)
    secret = await core.read_namespaced_secret(
        account.secrets[0].name, namespace, _request_timeout=REQUEST_TIMEOUT
    )
    return base64.b64decode(secret.data["token"]).decode()


SHIPPED_RBAC = Path(__file__).resolve().parents[1] / "conf" / "kubernetes" / "rbac.yaml"


def rbac_without(text: str, *, group: str, resource: str, verb: str) -> str:
    """The RBAC documents of ``text`` with ``verb`` on ``resource`` (in API ``group``) taken out
    of their Role (a rule left with no verb goes)."""
    documents = [doc for doc in yaml.safe_load_all(text) if doc]
    for doc in documents:
        if doc["kind"] != "Role":
            continue
        rules = []
        for rule in doc["rules"]:
            if group in rule["apiGroups"] and resource in rule["resources"]:
                assert len(rule["apiGroups"]) == len(rule["resources"]) == 1, rule
                assert verb in rule["verbs"], f"{verb} {resource} is not granted: {rule}"
                rule = {**rule, "verbs": [v for v in rule["verbs"] if v != verb]}
            if rule["verbs"]:
                rules.append(rule)
        doc["rules"] = rules
    return yaml.safe_dump_all(documents)


async def apply_shipped_rbac(
    dev_cluster: DevClusterInfo, *, namespace: str, without: tuple[str, str, str] | None = None
) -> None:
    """``kubectl apply`` of conf/kubernetes/rbac.yaml (the daemon's service account ``rmd``,
    its Role and RoleBinding) in ``namespace``, as an operator would; ``without``: (API group,
    resource, verb) taken out of the Role first."""
    text = SHIPPED_RBAC.read_text()
    if without is not None:
        group, resource, verb = without
        text = rbac_without(text, group=group, resource=resource, verb=verb)
    applied = await asyncio.to_thread(
        subprocess.run,
        ["kubectl", "-n", namespace, "apply", "-f", "-"],
        input=text,
        env={**os.environ, "KUBECONFIG": str(dev_cluster.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr


async def service_account_kubeconfig(
    core: client.CoreV1Api,
    dev_cluster: DevClusterInfo,
    *,
    namespace: str,
    account: str,
    path: Path,
) -> Path:
    """A kubeconfig at ``path`` that authenticates as the service account ``account``."""
    token = await service_account_token(core, namespace=namespace, name=account)
    return await asyncio.to_thread(
        write_kubeconfig,
        path,
        server=dev_cluster.server,
        ca=dev_cluster.ca_file,
        token=token,
        user=account,
        namespace=namespace,
    )


LimitedApiFactory = Callable[[str, Sequence[dict[str, Any]]], Awaitable[client.ApiClient]]


@pytest.fixture
async def limited_api_factory(
    kube_api: client.ApiClient, dev_cluster: DevClusterInfo
) -> AsyncIterator[LimitedApiFactory]:
    """``await factory(namespace, rules)`` → an ApiClient for a service account that holds
    only a Role with ``rules`` (RBAC PolicyRule dicts) in ``namespace``."""
    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    made: list[client.ApiClient] = []

    async def factory(namespace: str, rules: Sequence[dict[str, Any]]) -> client.ApiClient:
        name = f"limited-{secrets.token_hex(3)}"
        await core.create_namespaced_service_account(
            namespace, body=manifest({"metadata": {"name": name}}), _request_timeout=REQUEST_TIMEOUT
        )
        await rbac.create_namespaced_role(
            namespace,
            body=manifest({"metadata": {"name": name}, "rules": list(rules)}),
            _request_timeout=REQUEST_TIMEOUT,
        )
        await rbac.create_namespaced_role_binding(
            namespace,
            body=manifest(
                {
                    "metadata": {"name": name},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": name,
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                }
            ),
            _request_timeout=REQUEST_TIMEOUT,
        )
        token = await service_account_token(core, namespace=namespace, name=name)
        cfg = client.Configuration()
        cfg.host = dev_cluster.server
        cfg.ssl_ca_cert = str(dev_cluster.ca_file)
        cfg.api_key = {"BearerToken": token}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        api = client.ApiClient(cfg)
        made.append(api)
        return api

    yield factory
    for api in made:
        await api.close()


def cluster_state_json(info: DevClusterInfo) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((info.dir / "state.json").read_text())
    return data


# ---------------------------------------------------------------------------- real Flink


@pytest.fixture(scope="session")
def flink_install() -> FlinkInstall:
    """JDK + Flink (``$RMD_TEST_FLINK_VERSION``, default 2.3.0), provisioned as ``rmd
    dev-cluster up --flink`` does it; cached in ~/.cache/rmd, so only the first run pays."""
    return flink_support.provision()


@pytest.fixture(scope="session")
def rate_job_jar(flink_install: FlinkInstall) -> Path:
    """The rate-limited job (rmd_dev/flink/job; endless unless bounded by its second
    argument), compiled once and cached."""
    return flink_support.compile_rate_job(flink_install)
