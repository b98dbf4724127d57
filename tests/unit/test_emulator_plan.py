"""Reading what the emulator should do with a pod from its annotations."""

from __future__ import annotations

from typing import Any

from rmd_dev.emulator.plan import RunMode, parse_image_patterns, plan_pod


def pod(annotations: dict[str, str] | None = None, *images: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "annotations": annotations or {}},
        "spec": {
            "containers": [
                {"name": f"c{i}", "image": image} for i, image in enumerate(images or ("img",))
            ]
        },
    }


def test_default_is_a_pause_pod_without_trouble() -> None:
    plan = plan_pod(pod())
    assert plan.run_mode is RunMode.PAUSE
    assert plan.unpullable_containers == frozenset()
    assert plan.crash_after is None
    assert plan.problems == ()


def test_run_modes_and_default_workload() -> None:
    assert plan_pod(pod({"emulator.rmd.dev/run": "process"})).run_mode is RunMode.PROCESS
    coroutine = plan_pod(pod({"emulator.rmd.dev/run": "coroutine"}))
    assert coroutine.run_mode is RunMode.COROUTINE
    assert coroutine.workload == "rmd-agent"
    named = plan_pod(
        pod({"emulator.rmd.dev/run": "coroutine", "emulator.rmd.dev/workload": "sleep"})
    )
    assert named.workload == "sleep"


def test_unknown_run_mode_runs_nothing_and_says_why() -> None:
    plan = plan_pod(pod({"emulator.rmd.dev/run": "docker"}))
    assert plan.run_mode is RunMode.PAUSE
    assert "docker" in plan.problems[0]


def test_image_pull_error_annotation_hits_every_container() -> None:
    plan = plan_pod(pod({"emulator.rmd.dev/image-pull-error": "true"}, "a", "b"))
    assert plan.unpullable_containers == frozenset({"c0", "c1"})


def test_unpullable_image_patterns_hit_only_matching_containers() -> None:
    patterns = parse_image_patterns(" registry.invalid/* , *:broken ,")
    assert patterns == ("registry.invalid/*", "*:broken")
    plan = plan_pod(
        pod({}, "registry.invalid/app:1", "flink:1.12", "flink:broken"),
        unpullable_images=patterns,
    )
    assert plan.unpullable_containers == frozenset({"c0", "c2"})
    assert parse_image_patterns(None) == ()


def test_crash_after_reads_seconds_and_rejects_nonsense() -> None:
    assert plan_pod(pod({"emulator.rmd.dev/crash-after": "2.5"})).crash_after == 2.5
    for bad in ("soon", "-1", "nan", "inf"):
        plan = plan_pod(pod({"emulator.rmd.dev/crash-after": bad}))
        assert plan.crash_after is None
        assert plan.problems, bad
