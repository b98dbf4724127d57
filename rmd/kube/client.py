"""Where the Kubernetes credentials come from, chosen the way kubectl chooses.

Order: an explicit kubeconfig > in-cluster service account (``KUBERNETES_SERVICE_HOST`` set)
> ``$KUBECONFIG`` > ``~/.kube/config``. Always fills a fresh ``Configuration`` object: the
process-wide default of kubernetes_asyncio is never touched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader

log = structlog.get_logger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_ACCOUNT_DIR_ENV = "RMD_SERVICE_ACCOUNT_DIR"  # set by the dev cluster's node emulator
SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
KUBECONFIG_ENV = "KUBECONFIG"
# The variables aiohttp reads for a proxy (either case); NO_PROXY only matters with one set.
PROXY_ENV = ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "all_proxy")
# What kubernetes_asyncio's RESTClientObject gives its session (large watch events).
READ_BUFFER_SIZE = 2**21


class KubeConfigError(RuntimeError):
    """No usable Kubernetes credentials; the message is one line: what was tried, how to fix."""


def service_account_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The mounted service-account directory (token, ca.crt, namespace)."""
    env = os.environ if environ is None else environ
    override = env.get(SERVICE_ACCOUNT_DIR_ENV)
    return Path(override) if override else SERVICE_ACCOUNT_DIR


def in_cluster_namespace(environ: Mapping[str, str] | None = None) -> str | None:
    """The pod's own namespace from the service-account mount, if running in a pod."""
    path = service_account_dir(environ) / "namespace"
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None


def proxy_from_environment(environ: Mapping[str, str]) -> bool:
    """Whether a proxy variable (``HTTPS_PROXY`` and the like, either case) is set."""
    return any(environ.get(name) or environ.get(name.upper()) for name in PROXY_ENV)


def api_client(
    configuration: client.Configuration, *, environ: Mapping[str, str] | None = None
) -> client.ApiClient:
    """kubernetes_asyncio's ApiClient, without a look at the environment on every request.

    Its aiohttp session is made with ``trust_env=True`` (not configurable): every request
    then asks a worker thread for ``~/.netrc`` and another for the proxy variables. A netrc
    entry could not be used anyway (the bearer token is an Authorization header, which
    aiohttp refuses to combine with netrc credentials); the proxy variables are honoured as
    before (with ``NO_PROXY``) when one is set at start-up, and a kubeconfig's
    ``proxy-url`` (``Configuration.proxy``) is passed with each request either way.
    """
    api = client.ApiClient(configuration)
    if proxy_from_environment(os.environ if environ is None else environ):
        return api
    rest = api.rest_client
    session: aiohttp.ClientSession = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=session.connector, trust_env=False, read_bufsize=READ_BUFFER_SIZE
    )
    session.detach()  # the connector (TLS settings, pool size) lives on in the new session
    return api


async def load_kube_configuration(*, kubeconfig: Path | None = None) -> client.Configuration:
    """A Configuration for the cluster this process should talk to (see module docstring).

    Raises :class:`KubeConfigError` when nothing usable is found.
    """
    source = choose_credentials(kubeconfig=kubeconfig, environ=os.environ, home=Path.home())
    if source.kubeconfig_paths is None:
        return _from_service_account(os.environ)
    return await _from_kubeconfig(source.kubeconfig_paths, source=source.description)


@dataclass(frozen=True)
class CredentialSource:
    """Where the credentials come from: a kubeconfig (paths joined by os.pathsep, as in
    $KUBECONFIG) or, when ``kubeconfig_paths`` is None, the in-cluster service account."""

    description: str
    kubeconfig_paths: str | None


def choose_credentials(
    *, kubeconfig: Path | None, environ: Mapping[str, str], home: Path
) -> CredentialSource:
    """Pick the credential source the way kubectl does (files are only checked, not read)."""
    if kubeconfig is not None:
        path = kubeconfig.expanduser()
        if not path.is_file():
            raise KubeConfigError(
                f"kubeconfig {kubeconfig} does not exist: pass an existing file, or none to use"
                " in-cluster credentials, $KUBECONFIG or ~/.kube/config."
            )
        return CredentialSource("explicit kubeconfig", str(path))

    if environ.get(SERVICE_HOST_ENV):
        return CredentialSource("in-cluster", None)
    tried = [f"in-cluster (${SERVICE_HOST_ENV} unset)"]

    env_paths = environ.get(KUBECONFIG_ENV, "")
    if env_paths:
        existing = [
            str(Path(p).expanduser())
            for p in env_paths.split(os.pathsep)
            if p and Path(p).expanduser().is_file()
        ]
        if existing:
            return CredentialSource(f"${KUBECONFIG_ENV}", os.pathsep.join(existing))
        tried.append(f"${KUBECONFIG_ENV}={env_paths} (no such file)")
    else:
        tried.append(f"${KUBECONFIG_ENV} (unset)")

    default_path = home / ".kube" / "config"
    if default_path.is_file():
        return CredentialSource("~/.kube/config", str(default_path))
    tried.append(f"{default_path} (no such file)")
    raise KubeConfigError(
        "no Kubernetes credentials found: tried "
        + "; ".join(tried)
        + ". Run inside a pod with a service account, or set KUBECONFIG to a kubeconfig file"
        + " (e.g. the one `rmd dev-cluster up` prints)."
    )


async def _from_kubeconfig(paths: str, *, source: str) -> client.Configuration:
    configuration = client.Configuration()
    try:
        await config.load_kube_config(
            config_file=paths, client_configuration=configuration, persist_config=False
        )
    except (ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KubeConfigError(
            f"cannot use kubeconfig {paths} (from {source}): {detail}."
            " Fix the file or point KUBECONFIG at a working one."
        ) from exc
    log.info("kube_config_loaded", source=source, path=paths, host=configuration.host)
    return configuration


def _from_service_account(environ: Mapping[str, str]) -> client.Configuration:
    directory = service_account_dir(environ)
    configuration = client.Configuration()
    loader = InClusterConfigLoader(
        token_filename=str(directory / "token"),
        cert_filename=str(directory / "ca.crt"),
        environ=dict(environ),
    )
    try:
        loader.load_and_set(configuration)
    except (ConfigException, OSError) as exc:
        raise KubeConfigError(
            f"in-cluster credentials unusable (${SERVICE_HOST_ENV} is set): {exc} "
            f"[looked in {directory}]. Mount a service-account token (automountServiceAccountToken)"
            f" or set ${SERVICE_ACCOUNT_DIR_ENV} to the directory holding token and ca.crt."
        ) from exc
    log.info(
        "kube_config_loaded",
        source="in-cluster",
        host=configuration.host,
        service_account_dir=str(directory),
    )
    return configuration
