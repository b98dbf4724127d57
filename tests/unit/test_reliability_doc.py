"""docs/RELIABILITY.md is generated from the fault matrix's rows, and not edited by hand."""

from __future__ import annotations

from pathlib import Path

from tests.support.reliability_doc import HEADER, read_rows, render

DOCS = Path(__file__).resolve().parents[2] / "docs"

ROW = {
    "fault": "kube-apiserver stopped 30 s and restarted",
    "what_happened": "job reason: the API server | cannot be reached",
    "fault_seconds": 30.0,
    "converge_seconds": 4.2,
    "demand_pods": 3,
    "most_pods": 3,
    "pods_leaked": 0,
    "taskmanagers_lost": 0,
    "invariants_held": True,
    "profile": "full",
}


def test_a_row_becomes_a_table_line_with_its_figures() -> None:
    document = render([ROW, {**ROW, "invariants_held": False, "fault": "etcd"}])

    assert document.startswith(HEADER)
    assert "`make reliability`" in document
    lines = [line for line in document.splitlines() if line.startswith("| kube-apiserver")]
    assert lines == [
        "| kube-apiserver stopped 30 s and restarted | job reason: the API server \\| cannot "
        "be reached | 4.2 | 3 | 3 | 0 | 0 | yes |"
    ]
    assert "| etcd |" in document
    assert "**no**" in document


def test_the_soak_summary_is_quoted_in_a_section_of_its_own() -> None:
    summary = "soak of 20 min (...)\nslopes: rss_mb_per_min +0.010\n"

    document = render([ROW], soak_summary=summary)

    assert "## Soak" in document
    assert "`make soak`" in document
    assert "```text\nsoak of 20 min (...)\nslopes: rss_mb_per_min +0.010\n```" in document
    assert "## Soak" not in render([ROW])


def test_the_committed_document_is_the_one_its_rows_and_the_soak_make() -> None:
    rows = read_rows(DOCS / "reliability-results.jsonl")
    soak = (DOCS / "soak-summary.txt").read_text()

    assert rows, "docs/reliability-results.jsonl is empty: run make reliability"
    assert (DOCS / "RELIABILITY.md").read_text() == render(rows, soak_summary=soak), (
        "docs/RELIABILITY.md is stale or edited by hand: run make soak, then make reliability"
    )
