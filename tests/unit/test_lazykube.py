"""kubernetes_asyncio's generated API and model classes load on first use in the daemon
(rmd/lazykube.py): the same classes, without importing the 800 modules nobody uses."""

from __future__ import annotations

import json
import subprocess
import sys

from rmd.lazykube import split_imports

# Run in a fresh interpreter: in this one kubernetes_asyncio may already be imported.
PROBE = """
import json, sys
from rmd import lazykube
lazykube.install()  # as the rmd command does first (rmd/__main__.py)
import rmd.daemon
import kubernetes_asyncio.client as client
import kubernetes_asyncio.client.models as models

def loaded(prefix):
    return sum(1 for name in sys.modules if name.startswith(prefix))

at_start = {"models": loaded("kubernetes_asyncio.client.models."),
            "apis": loaded("kubernetes_asyncio.client.api.")}
from kubernetes_asyncio.client import V1Lease
from kubernetes_asyncio.client.models.v1_pod import V1Pod

class Answer:
    data = json.dumps({"metadata": {"name": "tm-1"}, "spec": {"containers": [{"name": "c"}]}})

pod = client.ApiClient.deserialize(object.__new__(client.ApiClient), Answer(), "V1Pod")
try:
    client.V1NoSuchThing
    unknown = "found"
except AttributeError as error:
    unknown = str(error)
print(json.dumps({
    "at_start": at_start,
    "same_class": client.V1Pod is V1Pod is models.V1Pod,
    "lease": V1Lease.__module__,
    "api": client.CoreV1Api.__module__,
    "deserialized": [type(pod).__name__, pod.spec.containers[0].name],
    "listed": "V1Pod" in dir(client) and "CoreV1Api" in dir(client),
    "version": client.__version__,
    "unknown": unknown,
}))
"""


LIBRARY_PROBE = """
import json, sys
import rmd.client, rmd.daemon
import kubernetes_asyncio.client
prefix = "kubernetes_asyncio.client.models."
print(json.dumps(sum(1 for name in sys.modules if name.startswith(prefix))))
"""


def test_importing_rmd_as_a_library_leaves_kubernetes_asyncio_as_it_is() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) > 700  # every model imported, as the library does itself


def test_the_daemon_imports_no_generated_class_it_does_not_use_and_gets_each_on_use() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    found = json.loads(done.stdout)
    # all 768 models and 69 API modules were imported before; the daemon's own imports use
    # none of them until it talks to the API server
    assert found["at_start"]["models"] < 10, found
    assert found["at_start"]["apis"] < 5, found
    assert found["same_class"] is True
    assert found["lease"] == "kubernetes_asyncio.client.models.v1_lease"
    assert found["api"] == "kubernetes_asyncio.client.api.core_v1_api"
    assert found["deserialized"] == ["V1Pod", "c"]  # the library's getattr(models, name)
    assert found["listed"] is True
    assert found["version"]  # the package's other statements still run
    assert "has no attribute 'V1NoSuchThing'" in found["unknown"]


def test_only_single_absolute_imports_from_the_client_become_lazy() -> None:
    lazy, rest = split_imports(
        "from __future__ import absolute_import\n"
        '__version__ = "1"\n'
        "from kubernetes_asyncio.client.api.core_v1_api import CoreV1Api\n"
        "from kubernetes_asyncio.client.models.v1_pod import V1Pod, V1PodSpec\n"
        "from kubernetes_asyncio.client.exceptions import ApiException as Problem\n"
        "from other.package import Thing\n"
    )
    assert lazy == {
        "CoreV1Api": "kubernetes_asyncio.client.api.core_v1_api",
        "V1Pod": "kubernetes_asyncio.client.models.v1_pod",
        "V1PodSpec": "kubernetes_asyncio.client.models.v1_pod",
    }
    kept = [type(statement).__name__ for statement in rest.body]
    assert kept == ["ImportFrom", "Assign", "ImportFrom", "ImportFrom"]  # renamed: kept as is
