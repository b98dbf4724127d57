"""``rmd daemon`` refuses bad configuration with one line, before it touches any cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmd.daemon import run_daemon

# No kubeconfig anywhere: if the daemon got as far as the cluster it would fail differently.
NO_CLUSTER = {"KUBECONFIG": "/nonexistent/kubeconfig", "HOME": "/nonexistent"}


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in NO_CLUSTER.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("FLINK_CONF_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./conf here


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        ([], "kubernetes.cluster-id", "kubernetes.cluster-id"),
        (["kubernetes.cluster-id=Bad_Id"], "kubernetes.cluster-id", "Bad_Id"),
        (
            ["kubernetes.cluster-id=ok", "resourcemanager.taskmanager-timeout=30 parsecs"],
            "resourcemanager.taskmanager-timeout",
            "30 parsecs",
        ),
        (
            ["kubernetes.cluster-id=ok", "taskmanager.memory.process.size=lots"],
            "taskmanager.memory.process.size",
            "lots",
        ),
        (["kubernetes.cluster-id=ok", "rmd.rest.prot=8090"], "rmd.rest.prot", "rmd.rest.port"),
        (
            ["kubernetes.cluster-id=ok", "kubernetes.taskmanager.cpu.limit-factor=0.5"],
            "kubernetes.taskmanager.cpu.limit-factor",
            "0.5",
        ),
    ],
)
def test_bad_configuration_stops_start_up_with_one_line(
    overrides: list[str], key: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv: list[str] = []
    for item in overrides:
        argv += ["-D", item]
    assert run_daemon(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("rmd daemon: ")
    assert key in err
    assert words in err


def test_unreadable_token_file_is_a_configuration_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-token"
    code = run_daemon(["-D", "kubernetes.cluster-id=ok", "-D", f"rmd.auth.token-file={missing}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "rmd.auth.token-file" in err
    assert str(missing) in err


def test_no_kubernetes_credentials_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_daemon(["-D", "kubernetes.cluster-id=ok"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("rmd daemon: no Kubernetes credentials found")
    assert "KUBECONFIG" in last
