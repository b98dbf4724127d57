"""The daemon's permission table (rmd/kube/permissions.py) and the RBAC it ships
(conf/kubernetes/rbac.yaml) say the same thing, and a missing permission is one line with
the fix."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import yaml

from rmd.config.settings import RmdSettings
from rmd.kube.access import Permission, grant_command, service_account_of
from rmd.kube.permissions import DAEMON_NEEDS, Need, missing_message, needs_for

ROOT = Path(__file__).resolve().parents[2]
Grant = tuple[str, str, str]  # (API group, resource, verb)


def shipped_role_grants() -> set[Grant]:
    """Every (group, resource, verb) the Role of conf/kubernetes/rbac.yaml grants."""
    documents = list(yaml.safe_load_all((ROOT / "conf/kubernetes/rbac.yaml").read_text()))
    roles = [doc for doc in documents if doc and doc["kind"] == "Role"]
    assert len(roles) == 1, "rbac.yaml holds one Role"
    grants: set[Grant] = set()
    for rule in roles[0]["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"unexpected rule shape {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.update((group, resource, verb) for verb in rule["verbs"])
    return grants


def table_grants() -> set[Grant]:
    return {
        (need.permission.group, need.permission.resource, need.permission.verb)
        for need in DAEMON_NEEDS
    }


def test_every_need_of_the_daemon_is_granted_by_the_shipped_role() -> None:
    missing = table_grants() - shipped_role_grants()
    assert not missing, f"rmd/kube/permissions.py needs what rbac.yaml does not grant: {missing}"


def test_every_rule_of_the_shipped_role_is_needed_by_the_daemon() -> None:
    unneeded = shipped_role_grants() - table_grants()
    assert not unneeded, f"rbac.yaml grants what no row of DAEMON_NEEDS needs: {unneeded}"


def test_the_table_is_namespaced_like_the_role_and_has_no_duplicates() -> None:
    permissions = [need.permission for need in DAEMON_NEEDS]
    assert len(set(permissions)) == len(permissions)
    assert all(p.namespaced for p in permissions), "rbac.yaml has a Role, no ClusterRole"
    assert all(need.why for need in DAEMON_NEEDS)


def _verbs_on(needs: tuple[Need, ...], resource: str) -> set[str]:
    return {n.permission.verb for n in needs if n.permission.resource == resource}


def test_every_configuration_needs_the_same_permissions_today() -> None:
    without_flink = needs_for(RmdSettings(cluster_id="c", supervise_flink=False))
    with_flink = needs_for(RmdSettings(cluster_id="c", supervise_flink=True))
    for needs in (without_flink, with_flink):
        assert _verbs_on(needs, "pods") == {"get", "list", "watch", "create", "delete", "patch"}
        assert _verbs_on(needs, "deployments") == {"get"}
        # rmd-state-<cluster-id> always; flink-config-<cluster-id> with Flink's TaskManagers.
        assert _verbs_on(needs, "configmaps") == {"get", "create", "update"}
        assert _verbs_on(needs, "events") == {"create", "patch"}
        assert _verbs_on(needs, "leases") == set()  # no Lease call without HA


def test_leases_are_needed_only_with_high_availability() -> None:
    settings = RmdSettings(cluster_id="c", high_availability="KUBERNETES")
    assert _verbs_on(needs_for(settings), "leases") == {"get", "create", "update"}


def _token(claims: dict[str, str]) -> str:
    def part(data: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def test_the_message_names_verb_resource_purpose_and_both_fixes_on_one_line() -> None:
    watch = next(n for n in DAEMON_NEEDS if n.permission == Permission("watch", "pods"))
    get = next(n for n in DAEMON_NEEDS if n.permission == Permission("get", "deployments", "apps"))
    text = missing_message([watch, get], namespace="ns", service_account=("ns", "rmd"))
    assert "\n" not in text
    assert "service account ns/rmd may not watch pods in namespace ns" in text
    assert "needed for the one pod watch" in text
    assert "(also missing: get deployments.apps)" in text
    assert (
        "kubectl -n ns create role rmd-watch-pods --verb=watch --resource=pods && kubectl -n ns "
        "create rolebinding rmd-watch-pods --role=rmd-watch-pods --serviceaccount=ns:rmd"
    ) in text
    assert 'apply conf/kubernetes/rbac.yaml (its Role has the rule apiGroups: [""], ' in text
    unknown = missing_message([get], namespace="ns", service_account=None)
    assert "the daemon's identity may not get deployments.apps in namespace ns" in unknown
    assert "--serviceaccount=<namespace>:<the daemon's service account>" in unknown


def test_the_service_account_is_read_from_its_token_and_nothing_else_is_taken_for_one() -> None:
    token = _token({"sub": "system:serviceaccount:team-a:rmd"})
    assert service_account_of(token) == ("team-a", "rmd")
    assert service_account_of(f"Bearer {token}") == ("team-a", "rmd")
    assert service_account_of(_token({"sub": "admin"})) is None
    assert service_account_of("static-admin-token") is None
    assert service_account_of("a.!!!.c") is None
    assert service_account_of(None) is None


def test_a_cluster_wide_permission_is_granted_with_a_cluster_role() -> None:
    nodes = Permission("list", "nodes", namespaced=False)
    text = grant_command(nodes, namespace="ns", role="r", subject="--user=u")
    assert text == (
        "kubectl create clusterrole r --verb=list --resource=nodes && "
        "kubectl create clusterrolebinding r --clusterrole=r --user=u"
    )


def test_an_application_cluster_that_removes_itself_needs_to_delete_its_deployment() -> None:
    removing = RmdSettings(cluster_id="c", execution_target="kubernetes-application")
    staying = RmdSettings(
        cluster_id="c",
        execution_target="kubernetes-application",
        shutdown_on_application_finish=False,
    )
    assert _verbs_on(needs_for(removing), "deployments") == {"get", "delete"}
    assert _verbs_on(needs_for(staying), "deployments") == {"get"}
