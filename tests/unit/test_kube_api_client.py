"""The daemon's Kubernetes client looks at the environment once, not on every request.

Against a real HTTP server on loopback standing in for the API server's ``/version``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from rmd.kube.client import api_client

ServerFactory = Any  # pytest-aiohttp's aiohttp_server fixture
TOKEN = "t0ken"


async def version_server(aiohttp_server: ServerFactory, seen: list[str]) -> Any:
    async def version(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        fields = ("buildDate", "compiler", "gitCommit", "gitTreeState", "gitVersion")
        info = dict.fromkeys((*fields, "goVersion", "platform"), "-")
        return web.json_response({**info, "major": "1", "minor": "20"})

    app = web.Application()
    app.router.add_get("/version/", version)
    return await aiohttp_server(app)


def configuration(server: Any) -> client.Configuration:
    config = client.Configuration(host=f"http://{server.host}:{server.port}")
    config.api_key = {"BearerToken": TOKEN}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    return config


async def test_a_netrc_entry_for_the_api_server_neither_is_read_nor_breaks_requests(
    aiohttp_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    server = await version_server(aiohttp_server, seen)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {server.host} login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    config = configuration(server)

    async with api_client(config, environ={}) as api:
        assert api.rest_client.pool_manager.trust_env is False
        answer = await client.VersionApi(api).get_code()
    assert answer.minor == "20"
    assert seen == [f"Bearer {TOKEN}"]

    # kubernetes_asyncio's own session looks the netrc up on every request, finds the
    # entry and refuses it beside the bearer token: what the daemon no longer asks for.
    async with client.ApiClient(config) as plain:
        with pytest.raises(ValueError, match="Cannot combine AUTHORIZATION header"):
            await client.VersionApi(plain).get_code()


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY"])
async def test_a_proxy_variable_keeps_the_environment_in_use(name: str) -> None:
    config = client.Configuration(host="https://127.0.0.1:6443")
    async with api_client(config, environ={name: "http://proxy.example:3128"}) as api:
        assert api.rest_client.pool_manager.trust_env is True
    async with api_client(config, environ={"NO_PROXY": "10.0.0.0/8"}) as api:
        assert api.rest_client.pool_manager.trust_env is False
