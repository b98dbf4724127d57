"""Kubernetes' name rules (apimachinery's validation), in one place.

Checked where a name enters rmd, a configuration value or a request, so a bad name is refused
there with the key or field named, not by the API server at the first pod create.
"""

from __future__ import annotations

import re

DNS_LABEL_MAX_LENGTH = 63
DNS_SUBDOMAIN_MAX_LENGTH = 253
LABEL_VALUE_MAX_LENGTH = 63

_DNS_1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_1123_LABEL_RE = re.compile(_DNS_1123_LABEL)
_DNS_1123_SUBDOMAIN_RE = re.compile(rf"{_DNS_1123_LABEL}(\.{_DNS_1123_LABEL})*")
_DNS_1035_LABEL_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# The name part of a qualified name, and a non-empty label value.
_QUALIFIED_NAME_PART_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ENV_VAR_NAME_RE = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def is_dns1123_label(name: str) -> bool:
    """A namespace name: at most 63 lower-case letters, digits and '-', alphanumeric ends."""
    return len(name) <= DNS_LABEL_MAX_LENGTH and _DNS_1123_LABEL_RE.fullmatch(name) is not None


def is_dns1035_label(name: str) -> bool:
    """A DNS-1123 label that starts with a letter (Service names, Flink's cluster id)."""
    return len(name) <= DNS_LABEL_MAX_LENGTH and _DNS_1035_LABEL_RE.fullmatch(name) is not None


def is_dns1123_subdomain(name: str) -> bool:
    """Most object names (pods, Secrets, ServiceAccounts): DNS-1123 labels joined by '.',
    at most 253 characters."""
    return (
        len(name) <= DNS_SUBDOMAIN_MAX_LENGTH and _DNS_1123_SUBDOMAIN_RE.fullmatch(name) is not None
    )


def is_qualified_name(name: str) -> bool:
    """A label, annotation, taint or resource key: ``[prefix/]name``, the prefix a DNS-1123
    subdomain, the name at most 63 letters, digits, '-', '_' and '.', alphanumeric ends."""
    prefix, slash, base = name.rpartition("/")
    if slash and not (prefix and is_dns1123_subdomain(prefix)):
        return False
    return len(base) <= DNS_LABEL_MAX_LENGTH and _QUALIFIED_NAME_PART_RE.fullmatch(base) is not None


def is_label_value(value: str) -> bool:
    """A label (or taint) value: empty, or a qualified name's name part."""
    return value == "" or (
        len(value) <= LABEL_VALUE_MAX_LENGTH
        and _QUALIFIED_NAME_PART_RE.fullmatch(value) is not None
    )


def is_env_var_name(name: str) -> bool:
    """A container environment variable name: letters, digits, '_', '-' and '.', not
    starting with a digit."""
    return _ENV_VAR_NAME_RE.fullmatch(name) is not None
