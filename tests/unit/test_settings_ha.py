"""High-availability settings: Flink's keys and values, defaults, and the checks that keep
two daemons from both creating pods."""

from __future__ import annotations

import pytest

from rmd.config.flinkconf import ConfigError, FlinkConfiguration
from rmd.config.settings import RmdSettings

REQUIRED = {"kubernetes.cluster-id": "my-flink"}


def settings(values: dict[str, str]) -> RmdSettings:
    return RmdSettings.from_configuration(FlinkConfiguration({**REQUIRED, **values}))


def error_for(values: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        settings(values)
    assert "\n" not in str(caught.value)
    return caught.value


def test_without_high_availability_there_is_no_election_and_flinks_defaults_hold() -> None:
    s = settings({})
    assert s.high_availability == "NONE"
    assert not s.leader_election
    assert (s.lease_duration, s.renew_deadline, s.retry_period) == (15.0, 15.0, 5.0)


@pytest.mark.parametrize(
    "value",
    [
        "kubernetes",
        "KUBERNETES",
        "org.apache.flink.kubernetes.highavailability.KubernetesHaServicesFactory",
    ],
)
def test_kubernetes_high_availability_as_flink_spells_it(value: str) -> None:
    assert settings({"high-availability.type": value}).leader_election


def test_the_former_key_and_the_timings_are_read() -> None:
    s = settings(
        {
            "high-availability": "kubernetes",
            "high-availability.kubernetes.leader-election.lease-duration": "6 s",
            "high-availability.kubernetes.leader-election.renew-deadline": "4000",
            "high-availability.kubernetes.leader-election.retry-period": "1 s",
            "kubernetes.jobmanager.replicas": "3",
        }
    )
    assert s.leader_election
    assert (s.lease_duration, s.renew_deadline, s.retry_period) == (6.0, 4.0, 1.0)


def test_zookeeper_with_one_replica_runs_one_daemon_without_an_election() -> None:
    assert not settings({"high-availability.type": "zookeeper"}).leader_election


def test_an_unknown_type_names_the_key_and_the_choices() -> None:
    error = error_for({"high-availability.type": "etcd"})
    assert error.key == "high-availability.type"
    assert "expected NONE, KUBERNETES" in str(error)


@pytest.mark.parametrize("ha", [{}, {"high-availability.type": "zookeeper"}])
def test_several_replicas_need_the_lease_election(ha: dict[str, str]) -> None:
    error = error_for({"kubernetes.jobmanager.replicas": "2", **ha})
    assert error.key == "kubernetes.jobmanager.replicas"
    assert "need high-availability.type: KUBERNETES" in str(error)
    assert "set it, or use 1 replica" in str(error)


def test_the_renew_deadline_may_not_exceed_the_lease_duration() -> None:
    error = error_for(
        {
            "high-availability.kubernetes.leader-election.lease-duration": "10 s",
            "high-availability.kubernetes.leader-election.renew-deadline": "20 s",
        }
    )
    assert error.key == "high-availability.kubernetes.leader-election.renew-deadline"
    assert "expected a renew deadline <= the lease duration" in str(error)


def test_the_retry_period_must_be_shorter_than_the_renew_deadline() -> None:
    error = error_for({"high-availability.kubernetes.leader-election.retry-period": "15 s"})
    assert error.key == "high-availability.kubernetes.leader-election.retry-period"
    assert "expected a retry period < the renew deadline" in str(error)
