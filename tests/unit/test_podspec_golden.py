"""Golden TaskManager pods: each configuration in tests/golden/podspec/cases.yaml must produce
exactly the pod in tests/golden/podspec/<case>.yaml.

``RMD_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_podspec_golden.py`` rewrites the
expected files; review the diff before committing. The integration test
(tests/integration/test_podspec_apiserver.py) sends every golden pod to a real API server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from rmd.config.flinkconf import FlinkConfiguration
from rmd.config.settings import RmdSettings
from rmd.kube.podspec import OwnerReference, TaskManagerPodFactory

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden" / "podspec"
CASES_FILE = GOLDEN_DIR / "cases.yaml"
DEFAULT_CLUSTER_ID = "flink-golden"
UPDATE = os.environ.get("RMD_UPDATE_GOLDEN") == "1"


@dataclass(frozen=True)
class GoldenCase:
    name: str
    config: dict[str, str] = field(default_factory=dict)
    owner: OwnerReference | None = None

    @property
    def expected_path(self) -> Path:
        return GOLDEN_DIR / f"{self.name}.yaml"

    def configuration(self, overrides: Mapping[str, str] | None = None) -> FlinkConfiguration:
        values = {"kubernetes.cluster-id": DEFAULT_CLUSTER_ID, **self.config, **(overrides or {})}
        return FlinkConfiguration(values)

    def build(self, overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
        conf = self.configuration(overrides)
        settings = RmdSettings.from_configuration(conf)
        factory = TaskManagerPodFactory.from_configuration(conf, settings)
        return factory.build(pod_name=f"{settings.cluster_id}-taskmanager-1-1", owner=self.owner)


def load_cases() -> list[GoldenCase]:
    document = yaml.safe_load(CASES_FILE.read_text(encoding="utf-8"))
    cases: list[GoldenCase] = []
    for name, body in document.items():
        body = body or {}
        config = {str(key): str(value) for key, value in (body.get("config") or {}).items()}
        if "template" in body:
            config[body["template_key"]] = str(GOLDEN_DIR / body["template"])
        owner = OwnerReference(**body["owner"]) if "owner" in body else None
        cases.append(GoldenCase(name=name, config=config, owner=owner))
    return cases


def dump(pod: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(pod), sort_keys=False, default_flow_style=False)


CASES = load_cases()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_pod_matches_golden_file(case: GoldenCase) -> None:
    pod = case.build()
    if UPDATE:
        case.expected_path.write_text(dump(pod), encoding="utf-8")
    assert case.expected_path.is_file(), f"no golden file; run with RMD_UPDATE_GOLDEN=1: {case}"
    expected = yaml.safe_load(case.expected_path.read_text(encoding="utf-8"))
    assert pod == expected


def test_every_golden_file_has_a_case() -> None:
    names = {case.name for case in CASES}
    files = {path.stem for path in GOLDEN_DIR.glob("*.yaml") if path != CASES_FILE}
    assert files == names


def test_the_matrix_covers_each_documented_option() -> None:
    """Each option the issue names appears in at least one golden configuration."""
    used = {key for case in CASES for key in case.config}
    options = {
        "kubernetes.taskmanager.cpu",
        "kubernetes.taskmanager.cpu.amount",
        "kubernetes.taskmanager.cpu.limit-factor",
        "taskmanager.memory.process.size",
        "kubernetes.taskmanager.memory.limit-factor",
        "external-resources",
        "kubernetes.container.image",
        "kubernetes.container.image.ref",
        "kubernetes.container.image.pull-policy",
        "kubernetes.container.image.pull-secrets",
        "kubernetes.taskmanager.service-account",
        "kubernetes.service-account",
        "kubernetes.taskmanager.node-selector",
        "kubernetes.taskmanager.tolerations",
        "kubernetes.taskmanager.labels",
        "kubernetes.taskmanager.annotations",
        "kubernetes.hostnetwork.enabled",
        "kubernetes.env.secretKeyRef",
        "kubernetes.secrets",
        "kubernetes.entry.path",
        "kubernetes.taskmanager.entrypoint.args",
        "kubernetes.pod-template-file.taskmanager",
        "kubernetes.pod-template-file.default",
    }
    assert options <= used, sorted(options - used)
    assert any(key.startswith("containerized.taskmanager.env.") for key in used)
