"""Every golden TaskManager pod is accepted by a real kube-apiserver (server-side dry run),
and the server keeps every field we send (an unknown or misspelt field would be dropped
silently by the API server, so "accepted" alone would not catch it)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.conftest import REQUEST_TIMEOUT, wait_for_service_account
from tests.unit.test_podspec_golden import CASES, GoldenCase

pytestmark = pytest.mark.integration

_SUFFIXES = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def quantity(value: object) -> Decimal:
    """A Kubernetes quantity's value (the server answers in canonical form: 4096Mi → 4Gi)."""
    match = _QUANTITY_RE.match(str(value))
    assert match, f"not a quantity: {value!r}"
    assert match.group(2) in _SUFFIXES, f"unknown quantity suffix: {value!r}"
    return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]


def kept_by_server(sent: Any, got: Any, path: str, *, quantities: bool = False) -> list[str]:
    """Where the server's answer lost or changed something of what was sent."""
    if isinstance(sent, dict):
        if not isinstance(got, dict):
            return [f"{path}: sent a mapping, server has {got!r}"]
        problems: list[str] = []
        for key, value in sent.items():
            if key not in got:
                if value not in ("", None, [], {}, False):  # omitempty on the server side
                    problems.append(f"{path}.{key}: dropped by the server (unknown field?)")
                continue
            problems += kept_by_server(
                value,
                got[key],
                f"{path}.{key}",
                quantities=quantities or key in ("requests", "limits"),
            )
        return problems
    if isinstance(sent, list):
        # Admission plugins append entries (the service account token volume and its mount,
        # default NoExecute tolerations); what was sent must come first, unchanged.
        appended = all(isinstance(item, dict) for item in sent)
        if (
            not isinstance(got, list)
            or len(got) < len(sent)
            or (len(got) != len(sent) and not appended)
        ):
            return [f"{path}: sent {sent!r}, server has {got!r}"]
        return [
            problem
            for index, (item, answer) in enumerate(zip(sent, got[: len(sent)], strict=True))
            for problem in kept_by_server(item, answer, f"{path}[{index}]", quantities=quantities)
        ]
    if quantities:
        return [] if quantity(sent) == quantity(got) else [f"{path}: {sent!r} became {got!r}"]
    return [] if sent == got else [f"{path}: sent {sent!r}, server has {got!r}"]


async def dry_run_create(core: Any, *, namespace: str, case: GoldenCase) -> list[str]:
    """Dry-run create ``case``'s pod; ``core`` is a CoreV1Api (Any: its stubs want models)."""
    pod = case.build({"kubernetes.namespace": namespace})
    try:
        response = await core.create_namespaced_pod(
            namespace,
            body=pod,
            dry_run="All",
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
    except client.ApiException as exc:
        body = json.loads(exc.body) if exc.body else {}
        return [f"{case.name}: rejected ({exc.status}): {body.get('message', exc.reason)}"]
    answer = json.loads(await response.read())
    if response.status >= 400:  # without preloading, errors come back as a Status body
        return [f"{case.name}: rejected ({response.status}): {answer.get('message')}"]
    return [f"{case.name}: {problem}" for problem in kept_by_server(pod, answer, "pod")]


async def test_every_golden_pod_is_accepted_by_the_api_server(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core: Any = client.CoreV1Api(kube_api)
    # The ServiceAccount admission plugin refuses pods whose account does not exist.
    accounts = {
        case.build({"kubernetes.namespace": namespace})["spec"]["serviceAccountName"]
        for case in CASES
    } - {"default"}
    for account in sorted(accounts):
        await core.create_namespaced_service_account(
            namespace, body={"metadata": {"name": account}}, _request_timeout=REQUEST_TIMEOUT
        )
    for account in sorted(accounts):
        await wait_for_service_account(core, namespace=namespace, name=account)

    problems: list[str] = []
    for case in CASES:
        problems += await dry_run_create(core, namespace=namespace, case=case)
    assert problems == []
    # The dry run created nothing.
    pods = await core.list_namespaced_pod(namespace, _request_timeout=REQUEST_TIMEOUT)
    assert pods.items == []


async def test_the_server_rejects_what_the_checks_would_let_through(
    kube_api: client.ApiClient, namespace: str
) -> None:
    """The comparison above is not vacuous: a broken pod is reported, a dropped field too."""
    core: Any = client.CoreV1Api(kube_api)
    case = next(case for case in CASES if case.name == "defaults")

    class BrokenCase(GoldenCase):
        def build(self, overrides: Any = None) -> dict[str, Any]:
            pod = super().build(overrides)
            pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "1m"  # < request
            return pod

    problems = await dry_run_create(
        core, namespace=namespace, case=BrokenCase(name="broken", config=case.config)
    )
    assert len(problems) == 1
    assert "rejected (422)" in problems[0]
    assert "must be less than or equal to cpu limit" in problems[0]

    class MisspeltCase(GoldenCase):
        def build(self, overrides: Any = None) -> dict[str, Any]:
            pod = super().build(overrides)
            pod["spec"]["containers"][0]["imagePullPolcy"] = "Always"  # misspelt
            return pod

    problems = await dry_run_create(
        core, namespace=namespace, case=MisspeltCase(name="misspelt", config=case.config)
    )
    assert problems == [
        "misspelt: pod.spec.containers[0].imagePullPolcy: dropped by the server (unknown field?)"
    ]
