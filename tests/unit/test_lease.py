"""The Lease's wire format (rmd.kube.lease): MicroTime, the record read from raw JSON, the
address a leader advertises."""

from __future__ import annotations

from rmd.core.leadership import LeaseRecord
from rmd.kube.lease import (
    LEADER_URL_ANNOTATION,
    advertised_url,
    candidate_identity,
    field_manager_name,
    lease_name,
    micro_time,
    record_of,
)


def test_micro_time_always_has_six_fractional_digits_and_utc() -> None:
    # datetime.isoformat() would write '2023-11-14T22:13:20+00:00' at a whole second, which
    # the API server refuses as a MicroTime.
    assert micro_time(1_700_000_000.0) == "2023-11-14T22:13:20.000000Z"
    assert micro_time(1_700_000_000.25) == "2023-11-14T22:13:20.250000Z"


def test_a_lease_reads_as_the_elections_record() -> None:
    lease = {
        "metadata": {
            "name": "f-rmd-leader",
            "resourceVersion": "812",
            "annotations": {LEADER_URL_ANNOTATION: "http://10.0.0.7:8090"},
        },
        "spec": {
            "holderIdentity": "f-7d9-abc_1f2e",
            "leaseDurationSeconds": 15,
            "leaseTransitions": 3,
            "acquireTime": "2026-12-01T00:00:00.000000Z",
            "renewTime": "2026-12-01T00:00:05.000000Z",
        },
    }
    assert record_of(lease) == LeaseRecord(
        holder="f-7d9-abc_1f2e",
        lease_duration=15.0,
        transitions=3,
        leader_url="http://10.0.0.7:8090",
        version="812",
    )
    # A Lease someone else made bare (no spec yet): nobody holds it.
    assert record_of({"metadata": {"resourceVersion": "1"}}) == LeaseRecord(
        holder="", lease_duration=0.0, transitions=0, leader_url=None, version="1"
    )


def test_names_and_addresses() -> None:
    assert lease_name("my-flink") == "my-flink-rmd-leader"
    first, second = (candidate_identity({"HOSTNAME": "my-flink-5d8-x2"}) for _ in range(2))
    assert first.startswith("my-flink-5d8-x2_")
    assert first != second  # a restarted container never takes the old Lease for its own
    pod = {"_POD_IP_ADDRESS": "10.0.0.7"}
    assert advertised_url(rest_address="0.0.0.0", port=8090, environ=pod) == "http://10.0.0.7:8090"
    assert advertised_url(rest_address="127.0.0.1", port=9, environ={}) == "http://127.0.0.1:9"
    assert field_manager_name(first) == f"rmd/{first}"
    v6 = {"_POD_IP_ADDRESS": "fd00::7"}
    assert advertised_url(rest_address="::", port=8090, environ=v6) == "http://[fd00::7]:8090"


def test_the_field_manager_keeps_the_identitys_unique_end_within_128_characters() -> None:
    identity = candidate_identity({"HOSTNAME": "h" * 253})
    name = field_manager_name(identity)
    assert len(name) == 128  # the API server refuses a longer fieldManager
    assert name.startswith("rmd/")
    assert name.endswith(identity[-13:])  # "_" + the unique suffix
