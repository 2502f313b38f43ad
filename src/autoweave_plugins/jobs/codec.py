"""Job messages and answers as they sit in Redis: encoded here, and validated when read.

A job is a stream entry of flat fields (so ``XRANGE`` and ``redis-cli`` show it readably)::

    id         the job id: 1 to 128 of [A-Za-z0-9_.:-]; its answer is autoweave:result:<id>
    hook       the hook to call, declared in the plugin's manifest
    args       a JSON array: the hook's positional arguments
    kwargs     a JSON object: its keyword arguments (optional)
    timeout    seconds the hook may run, a number as text (optional: the host's call_timeout)
    submitted  unix time of the submit, a number as text (optional)

Anything else (unknown fields, bad JSON, a message over ``max_message_bytes``) makes the message
malformed: ``decode_job`` raises ``InvalidJob`` naming the field, and the host dead-letters it.

An answer is one JSON document: ``{"ok": true, "value": ...}`` or ``{"ok": false, "error":
{...}}``, plus who answered (``host``), after how many ``deliveries``, and how long it ran. The
error map is enough to raise the same typed error a local ``call`` would (``error_from_dict``).
Both directions are bounded: what a host writes by ``max_result_bytes``, what a client reads by
the clip limits of the wire errors.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from autoweave_plugins import errors
from autoweave_plugins.errors import AutoweaveError, WorkerError
from autoweave_plugins.jobs.errors import InvalidJob, JobDeadLettered, JobError
from autoweave_plugins.rpc.wire_errors import MAX_MESSAGE, MAX_TRACEBACK, MAX_TYPE, clip

__all__ = [
    "MAX_TIMEOUT",
    "Answer",
    "Job",
    "decode_answer",
    "decode_job",
    "encode_answer",
    "encode_job",
    "error_from_dict",
    "error_to_dict",
    "job_id_of",
]

JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
HOOK = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_TIMEOUT = 86400.0
"""Longest ``timeout`` a job may ask for: a day."""
FIELDS = frozenset({"id", "hook", "args", "kwargs", "timeout", "submitted"})
RESERVED = frozenset({"name", "hook", "timeout"})
"""Keyword arguments a job cannot pass: ``PluginManager.call`` takes these names itself."""


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    hook: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    submitted: float | None = None


def _number(text: str, name: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidJob(name, f"must be a number, not {text[:40]!r}") from None
    if not math.isfinite(value) or not low < value <= high:
        raise InvalidJob(name, f"must be > {low:g} and <= {high:g}, not {text[:40]!r}")
    return value


def encode_job(job: Job) -> dict[str, bytes]:
    """The stream fields of ``job``. Raises InvalidJob if its arguments are not JSON."""
    try:
        fields = {
            "id": job.id.encode(),
            "hook": job.hook.encode(),
            "args": orjson.dumps(job.args),
        }
        if job.kwargs:
            fields["kwargs"] = orjson.dumps(job.kwargs)
    except TypeError as exc:
        raise InvalidJob("args", f"must be JSON-serialisable: {exc}") from None
    if job.timeout is not None:
        fields["timeout"] = repr(float(job.timeout)).encode()
    fields["submitted"] = repr(job.submitted if job.submitted else time.time()).encode()
    return fields


def job_id_of(fields: Mapping[bytes, bytes]) -> str | None:
    """The job id of a message, if it has a well-formed one (a malformed job still gets a
    dead-letter answer under its id, so that its submitter hears of it)."""
    raw = fields.get(b"id")
    try:
        text = raw.decode() if raw is not None else ""
    except UnicodeDecodeError:
        return None
    return text if JOB_ID.fullmatch(text) else None


def decode_job(fields: Mapping[bytes, bytes], max_bytes: int) -> Job:
    """Validate a stream entry's fields; raises InvalidJob naming the first problem."""
    size = sum(len(k) + len(v) for k, v in fields.items())
    if size > max_bytes:
        raise InvalidJob("message", f"is {size} bytes, over the {max_bytes}-byte limit")
    try:
        text = {k.decode(): v.decode() for k, v in fields.items()}
    except UnicodeDecodeError:
        raise InvalidJob("message", "a field name or value is not UTF-8") from None
    unknown = sorted(set(text) - FIELDS)
    if unknown:
        raise InvalidJob(unknown[0][:64], f"unknown field (known: {', '.join(sorted(FIELDS))})")
    for name in ("id", "hook"):
        if name not in text:
            raise InvalidJob(name, "is missing")
    if not JOB_ID.fullmatch(text["id"]):
        raise InvalidJob("id", "must be 1 to 128 of A-Z a-z 0-9 _ . : -")
    if not HOOK.fullmatch(text["hook"]):
        raise InvalidJob("hook", f"is not a hook name: {text['hook'][:64]!r}")
    args = _json(text.get("args", "[]"), "args", list)
    kwargs = _json(text.get("kwargs", "{}"), "kwargs", dict)
    reserved = sorted(set(kwargs) & RESERVED)
    if reserved:
        raise InvalidJob("kwargs", f"{reserved[0]!r} is reserved (the host's call takes it)")
    timeout = _number(text["timeout"], "timeout", 0, MAX_TIMEOUT) if "timeout" in text else None
    submitted = _number(text["submitted"], "submitted", 0, 1e11) if "submitted" in text else None
    return Job(text["id"], text["hook"], args, kwargs, timeout, submitted)


def _json(text: str, name: str, kind: type) -> Any:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidJob(name, f"is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        wanted = "an array" if kind is list else "an object"
        raise InvalidJob(name, f"must be a JSON {wanted}, not {type(value).__name__}")
    return value


# --- answers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """A recorded answer: the hook's value, or the error to raise, and who gave it."""

    ok: bool
    value: Any = None
    error: AutoweaveError | None = None
    host: str = ""
    deliveries: int = 0


def error_to_dict(exc: AutoweaveError) -> dict[str, Any]:
    """What of an error an answer carries: enough to raise the same type at the client."""
    out: dict[str, Any] = {"class": type(exc).__name__, "message": str(exc)}
    for attribute in (
        "plugin", "hook", "error_type", "error_message", "traceback", "permission", "field",
        "reason", "job_id", "last_error", "deliveries",
    ):  # fmt: skip
        value = getattr(exc, attribute, None)
        if value is not None:
            out[attribute] = value
    return out


def _text(data: Mapping[str, Any], key: str, limit: int = MAX_MESSAGE) -> str:
    value = data.get(key)
    return clip(value, limit) if isinstance(value, str) else ""


def _worker(cls: type[WorkerError]) -> Callable[[Mapping[str, Any]], AutoweaveError]:
    def build(data: Mapping[str, Any]) -> AutoweaveError:
        plugin = _text(data, "plugin", MAX_TYPE) or None
        message = _text(data, "message")
        prefix = f"plugin {plugin!r}: "
        return cls(message.removeprefix(prefix) if plugin else message, plugin)

    return build


def _load(cls: type[errors.LoadError]) -> Callable[[Mapping[str, Any]], AutoweaveError]:
    def build(data: Mapping[str, Any]) -> AutoweaveError:
        plugin = _text(data, "plugin", MAX_TYPE) or None
        message = _text(data, "message").removeprefix(f"plugin {plugin!r}: ")
        return cls(message, plugin, _text(data, "traceback", MAX_TRACEBACK) or None)

    return build


def _deliveries(data: Mapping[str, Any]) -> int:
    value = data.get("deliveries")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], AutoweaveError]] = {
    "HookError": lambda d: errors.HookError(
        _text(d, "plugin", MAX_TYPE) or None,
        _text(d, "hook", MAX_TYPE),
        _text(d, "error_type", MAX_TYPE),
        _text(d, "error_message"),
        _text(d, "traceback", MAX_TRACEBACK),
    ),
    "HookTimeout": _worker(errors.HookTimeout),
    "PluginCrashed": _worker(errors.PluginCrashed),
    "PluginFailed": _worker(errors.PluginFailed),
    "ProtocolError": _worker(errors.ProtocolError),
    "UnknownHook": _worker(errors.UnknownHook),
    "WorkerError": _worker(errors.WorkerError),
    "LoadError": _load(errors.LoadError),
    "LoadTimeout": _load(errors.LoadTimeout),
    "PermissionDenied": lambda d: errors.PermissionDenied(
        _text(d, "permission", MAX_TYPE), _text(d, "message")
    ),
    "FetchError": lambda d: errors.FetchError(_text(d, "message")),
    "InvalidJob": lambda d: InvalidJob(_text(d, "field", MAX_TYPE), _text(d, "reason")),
    "JobDeadLettered": lambda d: JobDeadLettered(
        _text(d, "job_id", MAX_TYPE),
        _text(d, "plugin", MAX_TYPE),
        _text(d, "reason"),
        _text(d, "last_error"),
        _deliveries(d),
    ),
}


def error_from_dict(data: Any) -> AutoweaveError:
    """The typed error an answer describes; an unknown class reads as ``JobError``."""
    if not isinstance(data, dict):
        return JobError("the job's answer holds a malformed error")
    build = _BUILDERS.get(data.get("class", ""))
    if build is None:
        return JobError(
            f"{_text(data, 'class', MAX_TYPE) or 'error'}: {_text(data, 'message')}".strip()
        )
    return build(data)


def encode_answer(
    value: Any, error: AutoweaveError | None, *, host: str, deliveries: int, max_bytes: int
) -> tuple[bytes, bool]:
    """The answer document and whether it is a success. A value that is not JSON, or too big,
    becomes an ``InvalidJob`` error answer (field ``result``), so the job still gets an answer."""
    meta = {"host": host, "deliveries": deliveries, "finished": time.time()}
    if error is None:
        try:
            body = orjson.dumps({"ok": True, "value": value, **meta})
        except TypeError as exc:
            error = InvalidJob("result", f"the hook's value is not JSON: {exc}")
        else:
            if len(body) <= max_bytes:
                return body, True
            error = InvalidJob(
                "result", f"the hook's value is {len(body)} bytes of JSON, over {max_bytes}"
            )
    return orjson.dumps({"ok": False, "error": error_to_dict(error), **meta}), False


def decode_answer(raw: bytes, max_bytes: int) -> Answer:
    """Read a recorded answer; a malformed one reads as a ``JobError`` answer."""
    if len(raw) > max_bytes:
        return Answer(False, error=JobError(f"the job's answer is over {max_bytes} bytes"))
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Answer(False, error=JobError("the job's answer is not JSON"))
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        return Answer(False, error=JobError("the job's answer is not an answer document"))
    host = _text(data, "host", MAX_TYPE)
    deliveries = _deliveries(data)
    if data["ok"]:
        return Answer(True, data.get("value"), host=host, deliveries=deliveries)
    return Answer(False, error=error_from_dict(data.get("error")), host=host, deliveries=deliveries)
