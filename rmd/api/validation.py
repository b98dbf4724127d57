"""Checks of request input. Each function returns the clean value or raises ProblemError.

Validation happens before the allocator is called, so a refused request changes nothing.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rmd.api.problems import INVALID_VALUE, MALFORMED_REQUEST, ProblemError
from rmd.config.names import is_dns1123_subdomain

__all__ = [
    "ADDRESS_PATTERN",
    "ID_MAX_LENGTH",
    "JOB_SLOTS_MAX",
    "MAX_BODY_BYTES",
    "TASKMANAGER_SLOTS_MAX",
    "ReportedSlot",
    "check_slot_report_fits",
    "parse_address",
    "parse_job_id",
    "parse_json_object",
    "parse_slot_report",
    "parse_taskmanager_id",
    "parse_wait",
    "require_field_str",
    "require_int",
]

MAX_BODY_BYTES = 64 * 1024  # larger bodies get 413
ID_MAX_LENGTH = 128
# A job may ask for at most this many slots: far beyond any real cluster (3,000 pods per
# namespace is Kubernetes' tested limit), low enough to catch a unit mix-up or an overflow.
JOB_SLOTS_MAX = 100_000
TASKMANAGER_SLOTS_MAX = 10_000

_JOB_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
# ``host:port`` as the OpenAPI document states it (the Registration schema's pattern; a test
# keeps the two equal): a host name, an IPv4 address or a bracketed IPv6 address, a port.
# parse_address checks more than a pattern can: the IPv6 address, the length, the port range.
ADDRESS_PATTERN = (
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*):[0-9]{1,5}$"
)
_ADDRESS = re.compile(ADDRESS_PATTERN)
_SLOT_INDEX = re.compile(r"0|[1-9][0-9]{0,4}")


def parse_job_id(raw: str) -> str:
    if _JOB_ID.fullmatch(raw) is None or raw in (".", ".."):
        raise ProblemError(
            INVALID_VALUE,
            f"The job id {_shorten(raw)!r} is not valid: use 1 to {ID_MAX_LENGTH} characters "
            "of letters, digits, '.', '_' and '-' (not '.' or '..').",
            field="job_id",
        )
    return raw


def parse_taskmanager_id(raw: str) -> str:
    if len(raw) > ID_MAX_LENGTH or not is_dns1123_subdomain(raw):
        raise ProblemError(
            INVALID_VALUE,
            f"The TaskManager id {_shorten(raw)!r} is not valid: use the pod name, 1 to "
            f"{ID_MAX_LENGTH} characters of lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit.",
            field="taskmanager_id",
        )
    return raw


def parse_json_object(raw: bytes, *, empty_means: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body as a JSON object. An empty body is refused unless ``empty_means`` is given."""
    if raw == b"{}":  # every plain heartbeat: no parser needed
        return {}
    if not raw.strip() and empty_means is not None:
        return dict(empty_means)
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ProblemError(
            MALFORMED_REQUEST, "The request body is not UTF-8: send JSON encoded as UTF-8."
        ) from None
    except (ValueError, RecursionError) as error:
        raise ProblemError(
            MALFORMED_REQUEST,
            f"The request body is not valid JSON ({_reason(error)}): send a JSON object.",
        ) from None
    if not isinstance(document, dict):
        raise ProblemError(
            MALFORMED_REQUEST,
            f"The request body is a JSON {_json_type(document)}: send a JSON object.",
        )
    return document


def require_int(body: Mapping[str, Any], key: str, *, minimum: int, maximum: int) -> int:
    """A required integer field (a JSON number without fraction; never a bool or a string)."""
    value = _present(body, key, wanted=f"an integer from {minimum} to {maximum}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(key, value, wanted=f"an integer from {minimum} to {maximum}")
    if not minimum <= value <= maximum:
        raise ProblemError(
            INVALID_VALUE,
            f"The field {key!r} is {_shorten(str(value))}: send an integer from "
            f"{minimum} to {maximum}.",
            field=key,
        )
    return value


def require_field_str(
    body: Mapping[str, Any], key: str, *, meaning: str, where: str | None = None
) -> str:
    """A required string field, content unchecked (the caller parses it).

    ``meaning`` completes the sentence "send ... as a string", e.g. "the pod name";
    ``where`` names the field in the problem when it is nested (default: ``key``).
    """
    name = where or key
    value = _present(body, key, wanted=f"{meaning} as a string", where=name)
    if not isinstance(value, str):
        raise _wrong_type(name, value, wanted=f"{meaning} as a string")
    return value


def _present(body: Mapping[str, Any], key: str, *, wanted: str, where: str | None = None) -> Any:
    """The field's value; a missing field is a malformed request saying what to send."""
    if key not in body:
        name = where or key
        raise ProblemError(
            MALFORMED_REQUEST, f"The field {name!r} is missing: send {wanted}.", field=name
        )
    return body[key]


def _wrong_type(key: str, value: object, *, wanted: str) -> ProblemError:
    return ProblemError(
        MALFORMED_REQUEST,
        f"The field {key!r} is a JSON {_json_type(value)}: send {wanted}.",
        field=key,
    )


def parse_address(body: Mapping[str, Any], key: str = "address") -> str:
    """A required ``host:port`` string; IPv6 hosts in brackets; port 1..65535."""
    value = require_field_str(body, key, meaning="the TaskManager's address 'host:port'")
    host, _, port = value.rpartition(":")
    if _ADDRESS.fullmatch(value) is None or not _valid_host(host) or not _valid_port(port):
        raise ProblemError(
            INVALID_VALUE,
            f"The field {key!r} is {_shorten(value)!r}: send 'host:port' with a host name, "
            "an IPv4 address or a bracketed IPv6 address, and a port from 1 to 65535.",
            field=key,
        )
    return value


@dataclass(frozen=True, slots=True)
class ReportedSlot:
    """One entry of a heartbeat's slot report: the slot's index on its TaskManager, and the
    job the TaskManager says holds it (None: free)."""

    index: int
    job_id: str | None


def parse_slot_report(body: Mapping[str, Any], *, taskmanager_id: str) -> tuple[ReportedSlot, ...]:
    """A heartbeat's optional slot report: ``{"slots": [{"slot_id": ..., "job_id": ...}]}``.

    Each entry: ``slot_id`` is ``<taskmanager_id>/<index>`` of this TaskManager, once;
    ``job_id`` is null or a job id. How many slots the TaskManager has is checked by
    :func:`check_slot_report_fits`. The daemon does not use the content yet.
    """
    if "slots" not in body:
        return ()
    slots = body["slots"]
    if not isinstance(slots, list):
        raise ProblemError(
            MALFORMED_REQUEST,
            f"The field 'slots' of a heartbeat is a JSON {_json_type(slots)}: send a list of "
            '{"slot_id": ..., "job_id": ...} objects, or send {}.',
            field="slots",
        )
    if len(slots) > TASKMANAGER_SLOTS_MAX:
        raise ProblemError(
            INVALID_VALUE,
            f"The field 'slots' has {len(slots)} entries: send at most one per slot of the "
            "TaskManager.",
            field="slots",
        )
    reported = tuple(
        _reported_slot(entry, where=f"slots[{number}]", taskmanager_id=taskmanager_id)
        for number, entry in enumerate(slots)
    )
    seen: set[int] = set()
    for number, slot in enumerate(reported):
        if slot.index in seen:
            raise ProblemError(
                INVALID_VALUE,
                f"The field 'slots[{number}].slot_id' repeats slot {slot.index}: send each "
                "slot once.",
                field=f"slots[{number}].slot_id",
            )
        seen.add(slot.index)
    return reported


def check_slot_report_fits(reported: Sequence[ReportedSlot], *, slots_total: int) -> None:
    """The report names no slot the TaskManager does not have (it has ``slots_total``)."""
    for number, slot in enumerate(reported):
        if slot.index >= slots_total:
            raise ProblemError(
                INVALID_VALUE,
                f"The field 'slots[{number}].slot_id' names slot {slot.index}, but the "
                f"TaskManager has {slots_total} slot(s): send indexes from 0 to "
                f"{slots_total - 1}.",
                field=f"slots[{number}].slot_id",
            )


def _reported_slot(entry: object, *, where: str, taskmanager_id: str) -> ReportedSlot:
    if not isinstance(entry, dict):
        raise ProblemError(
            MALFORMED_REQUEST,
            f"The field {where!r} is a JSON {_json_type(entry)}: send an object "
            '{"slot_id": ..., "job_id": ...}.',
            field=where,
        )
    slot_id = require_field_str(
        entry, "slot_id", meaning=f"'{taskmanager_id}/<index>'", where=f"{where}.slot_id"
    )
    owner, slash, index = slot_id.rpartition("/")
    if not slash or owner != taskmanager_id or _SLOT_INDEX.fullmatch(index) is None:
        raise ProblemError(
            INVALID_VALUE,
            f"The field '{where}.slot_id' is {_shorten(slot_id)!r}: send "
            f"'{taskmanager_id}/<index>' with the slot's index (0, 1, ...) on this TaskManager.",
            field=f"{where}.slot_id",
        )
    job_id = entry.get("job_id")
    if job_id is not None:
        if not isinstance(job_id, str):
            raise _wrong_type(f"{where}.job_id", job_id, wanted="the job's id as a string, or null")
        try:
            parse_job_id(job_id)
        except ProblemError as error:
            raise ProblemError(error.kind, error.detail, field=f"{where}.job_id") from None
    return ReportedSlot(index=int(index), job_id=job_id)


def parse_wait(values: Sequence[str], *, max_wait: float) -> float | None:
    """The ``wait`` query parameter (all its values, in order) in seconds; None when absent."""
    raw = _at_most_once("wait", values)
    if raw is None:
        return None
    return float(
        _bounded_number(
            "wait",
            raw,
            parse=_finite_float,
            low=0,
            high=max_wait,
            wanted=f"a number of seconds from 0 to {max_wait:g}",
        )
    )


def parse_slots_flag(values: Sequence[str]) -> bool:
    """The ``slots`` query parameter of ``GET /v1/jobs/{job_id}``: ``false`` leaves the slot
    list out (the compact JobView); absent or ``true`` lists every slot."""
    if not values:
        return True
    if len(values) > 1 or values[0] not in ("true", "false"):
        shown = ", ".join(repr(_shorten(value)) for value in values)
        raise ProblemError(
            MALFORMED_REQUEST,
            f"The query parameter 'slots' is {shown}: give it once, 'true' (every slot "
            f"listed, the default) or 'false' (counts only).",
            field="slots",
        )
    return values[0] == "true"


SLOTS_LIMIT_MAX = 10_000
SLOTS_AFTER_MAX_LENGTH = 300  # a slot id: <TaskManager id>/<index>


@dataclass(frozen=True, slots=True)
class SlotPage:
    """``?slots_limit=N[&slots_after=<slot id>]``: at most ``limit`` slots, those after
    ``after`` in the job's listing (None: from the first)."""

    limit: int
    after: str | None


def parse_slot_page(limits: Sequence[str], afters: Sequence[str]) -> SlotPage | None:
    """The ``slots_limit`` / ``slots_after`` query parameters of ``GET /v1/jobs/{job_id}``;
    None when neither is given (every slot listed)."""
    raw = _at_most_once("slots_limit", limits)
    after = _at_most_once("slots_after", afters)
    if raw is None:
        if after is not None:
            raise ProblemError(
                INVALID_VALUE,
                "The query parameter 'slots_after' pages the slot list: give 'slots_limit' "
                "(how many slots a page holds) with it.",
                field="slots_after",
            )
        return None
    limit = int(
        _bounded_number(
            "slots_limit",
            raw,
            parse=_whole_number,
            low=1,
            high=SLOTS_LIMIT_MAX,
            wanted=f"a whole number of slots from 1 to {SLOTS_LIMIT_MAX}",
        )
    )
    if after is not None and not 1 <= len(after) <= SLOTS_AFTER_MAX_LENGTH:
        raise ProblemError(
            INVALID_VALUE,
            "The query parameter 'slots_after' is not a slot id: give the 'slots_next' of "
            "the previous page.",
            field="slots_after",
        )
    return SlotPage(limit=limit, after=after)


def _at_most_once(name: str, values: Sequence[str]) -> str | None:
    """A query parameter's one value (None when absent); given twice is malformed."""
    if len(values) > 1:
        raise ProblemError(
            MALFORMED_REQUEST,
            f"The query parameter '{name}' is given twice: give it once.",
            field=name,
        )
    return values[0] if values else None


def _bounded_number(
    name: str,
    raw: str,
    *,
    parse: Callable[[str], int | float | None],
    low: float,
    high: float,
    wanted: str,
) -> int | float:
    """A numeric query parameter: unparsable is malformed (400), outside [low, high] is an
    invalid value (422); both answers say what to give (``wanted``)."""
    value = parse(raw)
    if value is None:
        raise ProblemError(
            MALFORMED_REQUEST,
            f"The query parameter '{name}' is {_shorten(raw)!r}: give {wanted}.",
            field=name,
        )
    if not low <= value <= high:
        raise ProblemError(
            INVALID_VALUE,
            f"The query parameter '{name}' is {_number_text(value)}: give {wanted}.",
            field=name,
        )
    return value


def _number_text(value: int | float) -> str:
    """Whole numbers as digits (10000000, not 1e+07), others as short as ``g`` makes them."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _finite_float(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _whole_number(raw: str) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() else None


def _valid_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if not host or len(host) > 253:
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in host.split("."))


def _valid_port(port: str) -> bool:
    return _PORT.fullmatch(port) is not None and 1 <= int(port) <= 65535


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_type(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "boolean"
        case int() | float():
            return "number"
        case str():
            return "string"
        case list():
            return "array"
        case dict():
            return "object"
        case _:
            return type(value).__name__


def _reason(error: BaseException) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply"
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno} column {error.colno}"
    return str(error)


def _shorten(text: str, *, limit: int = 64) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
