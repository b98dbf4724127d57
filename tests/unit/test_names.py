"""Kubernetes' name rules (rmd/config/names.py), as apimachinery's validation states them."""

from __future__ import annotations

import pytest

from rmd.config.names import (
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_env_var_name,
    is_label_value,
    is_qualified_name,
)

# Each rule's edge: the longest name it takes and the first it refuses.
LABEL_63 = "a" * 63
SUBDOMAIN_253 = ".".join(["a" * 63] * 3 + ["a" * 61])


@pytest.mark.parametrize("name", ["a", "0", "my-flink", "a1-b2", LABEL_63])
def test_dns1123_labels(name: str) -> None:
    assert is_dns1123_label(name)


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a.b", "a_b", "a" * 64, "a\n", "ä", "a b"])
def test_not_dns1123_labels(name: str) -> None:
    assert not is_dns1123_label(name)


def test_dns1035_labels_start_with_a_letter() -> None:
    assert is_dns1035_label("my-flink")
    assert is_dns1035_label(LABEL_63)
    assert not is_dns1035_label("1flink")
    assert not is_dns1035_label("a" * 64)
    assert not is_dns1035_label("my.flink")


@pytest.mark.parametrize("name", ["a", "a.b", "rmd-token", "a-1.b-2.c", SUBDOMAIN_253])
def test_dns1123_subdomains(name: str) -> None:
    assert len(name) <= 253
    assert is_dns1123_subdomain(name)


@pytest.mark.parametrize(
    "name", ["", ".a", "a.", "a..b", "A.b", "a_b", SUBDOMAIN_253 + "a", "pod\n", "a/b"]
)
def test_not_dns1123_subdomains(name: str) -> None:
    assert not is_dns1123_subdomain(name)


@pytest.mark.parametrize(
    "name",
    ["team", "app.kubernetes.io/part-of", "nvidia.com/gpu", "A_b.C-d", "x" * 63, "a/" + "x" * 63],
)
def test_qualified_names(name: str) -> None:
    assert is_qualified_name(name)


@pytest.mark.parametrize(
    "name", ["", "/a", "a/", "disk/type/x", "Bad_Prefix/a", "-a", "a-", "x" * 64, "not valid"]
)
def test_not_qualified_names(name: str) -> None:
    assert not is_qualified_name(name)


@pytest.mark.parametrize("value", ["", "v1", "data-science", "A.b_C", "x" * 63])
def test_label_values(value: str) -> None:
    assert is_label_value(value)


@pytest.mark.parametrize("value", ["data science", "-v", "v-", "x" * 64, "a/b"])
def test_not_label_values(value: str) -> None:
    assert not is_label_value(value)


@pytest.mark.parametrize("name", ["JAVA_HOME", "a.b-c", "_x", "-x", "X1"])
def test_env_var_names(name: str) -> None:
    assert is_env_var_name(name)


@pytest.mark.parametrize("name", ["", "1BAD", "A B", "A=B", "A\n"])
def test_not_env_var_names(name: str) -> None:
    assert not is_env_var_name(name)
