"""Security review: what the daemon shows (its log, /metrics, ``rmd status -o json``) carries
neither the bearer token nor any value a pod template, ``containerized.taskmanager.env.*`` or a
``kubernetes.env.secretKeyRef`` Secret puts into TaskManager pods — after real pods were
created, registered, refused and released.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from pathlib import Path

from kubernetes_asyncio import client

from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo, manifest
from tests.integration.daemon_harness import RunningDaemon, running_daemon


def template_with_env(value: str) -> str:
    return f"""\
apiVersion: v1
kind: Pod
spec:
  containers:
    - name: flink-main-container
      env:
        - name: TEMPLATE_PASSWORD
          value: "{value}"
"""


async def status_json_text(daemon: RunningDaemon, *, token_file: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "rmd", "status", "--url", daemon.url, "-o", "json"),
        *("--token-file", str(token_file)),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode()


async def test_no_token_or_pod_secret_in_logs_metrics_or_status(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube_api)
    token = f"token-{secrets.token_hex(8)}"
    secret_value = f"from-secret-{secrets.token_hex(8)}"
    template_value = f"from-template-{secrets.token_hex(8)}"
    env_value = f"from-env-option-{secrets.token_hex(8)}"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    template = tmp_path / "taskmanager-template.yaml"
    template.write_text(template_with_env(template_value))
    for name, data in (("rmd-token", {"token": token}), ("db", {"password": secret_value})):
        await core.create_namespaced_secret(
            namespace,
            body=manifest({"metadata": {"name": name}, "stringData": data}),
            _request_timeout=REQUEST_TIMEOUT,
        )
    extra = {
        "rmd.auth.token-file": str(token_file),
        "rmd.auth.token-secret": "rmd-token",
        "kubernetes.pod-template-file.taskmanager": str(template),
        "containerized.taskmanager.env.DB_PASSWORD": env_value,
        "kubernetes.env.secretKeyRef": "env:SECRET_PASSWORD,secret:db,key:password",
        "resourcemanager.taskmanager-timeout": "1 s",
    }
    async with running_daemon(
        dev_cluster=dev_cluster,
        kube_api=kube_api,
        namespace=namespace,
        extra=extra,
        as_process=True,
        token=token,
    ) as daemon:
        await daemon.put_requirement("job-s", 8)
        await daemon.wait_fulfilled("job-s")
        [pod, *_] = await daemon.pods()
        env = {e.name: e for e in pod.spec.containers[0].env}
        assert env["TEMPLATE_PASSWORD"].value == template_value  # the values are in the pods
        assert env["DB_PASSWORD"].value == env_value
        assert env["SECRET_PASSWORD"].value_from.secret_key_ref.name == "db"
        # Refused calls are logged too: a wrong token, one in the query string, a foreign pod.
        async with daemon.http.get(
            f"{daemon.url}/v1/status?token={token}", headers={"Authorization": "Bearer wrong"}
        ) as resp:
            assert resp.status == 401
        async with daemon.http.post(
            f"{daemon.url}/v1/taskmanagers",
            json={"taskmanager_id": "other-taskmanager-1-1", "address": "1.2.3.4:1", "slots": 4},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 403
            assert "other-taskmanager-1-1" in (await resp.json())["detail"]
        await daemon.put_requirement("job-s", 0)  # releases: pods deleted, notices logged

        shown = {
            "/metrics": await daemon.metrics(),
            "rmd status -o json": await status_json_text(daemon, token_file=token_file),
        }
    assert daemon.log_path is not None
    shown["the daemon's log"] = daemon.log_path.read_text()
    assert "job-s" in shown["rmd status -o json"] or "job-s" in shown["the daemon's log"]
    for where, text in shown.items():
        assert text, where
        for what, value in (
            ("the bearer token", token),
            ("a Secret's value", secret_value),
            ("a pod template's env value", template_value),
            ("containerized.taskmanager.env.DB_PASSWORD", env_value),
        ):
            assert value not in text, f"{what} appears in {where}"
