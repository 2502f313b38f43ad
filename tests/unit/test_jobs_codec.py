"""Job messages and answers: round trips, every malformed message refused with InvalidJob,
answers read back as the same typed errors, and the [jobs] config checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoweave_plugins.errors import (
    ConfigError,
    HookError,
    HookTimeout,
    LoadError,
    PluginCrashed,
)
from autoweave_plugins.jobs import JobsConfig
from autoweave_plugins.jobs.codec import (
    Job,
    decode_answer,
    decode_job,
    encode_answer,
    encode_job,
)
from autoweave_plugins.jobs.errors import InvalidJob, JobDeadLettered, JobError
from autoweave_plugins.settings import ManagerConfig

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,128}", fullmatch=True)
hooks = st.from_regex(r"on[A-Z][a-zA-Z0-9]{0,20}", fullmatch=True)


def wire(job: Job) -> dict[bytes, bytes]:
    return {k.encode(): v for k, v in encode_job(job).items()}


@given(
    ids,
    hooks,
    st.lists(json_values, max_size=4),
    st.dictionaries(
        st.from_regex(r"[a-z]{1,8}", fullmatch=True).filter(lambda k: k not in ("name", "hook")),
        json_values,
        max_size=3,
    ),
)
def test_jobs_round_trip(
    job_id: str, hook: str, args: list[object], kwargs: dict[str, object]
) -> None:
    decoded = decode_job(wire(Job(job_id, hook, args, kwargs, 2.5)), 1 << 20)
    assert (decoded.id, decoded.hook, decoded.args, decoded.kwargs, decoded.timeout) == (
        job_id, hook, args, kwargs, 2.5,
    )  # fmt: skip


@given(
    st.dictionaries(
        st.sampled_from([b"id", b"hook", b"args", b"kwargs", b"timeout", b"submitted", b"x"]),
        st.binary(max_size=30),
    )
)
def test_any_message_decodes_or_is_refused_with_invalid_job(fields: dict[bytes, bytes]) -> None:
    try:
        decode_job(fields, 1 << 20)
    except InvalidJob as exc:
        assert exc.field and exc.reason


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({b"hook": b"onX"}, "id"),
        ({b"id": b"a"}, "hook"),
        ({b"id": b"a b", b"hook": b"onX"}, "id"),
        ({b"id": b"a", b"hook": b"on X"}, "hook"),
        ({b"id": b"a", b"hook": b"onX", b"args": b"{}"}, "args"),
        ({b"id": b"a", b"hook": b"onX", b"args": b"[1,"}, "args"),
        ({b"id": b"a", b"hook": b"onX", b"kwargs": b'{"name": 1}'}, "kwargs"),
        ({b"id": b"a", b"hook": b"onX", b"timeout": b"nan"}, "timeout"),
        ({b"id": b"a", b"hook": b"onX", b"timeout": b"-1"}, "timeout"),
        ({b"id": b"a", b"hook": b"onX", b"extra": b"1"}, "extra"),
        ({b"id": b"a", b"hook": b"onX", b"args": b'["' + b"x" * 2000 + b'"]'}, "message"),
        ({b"id": b"\xff", b"hook": b"onX"}, "message"),
    ],
)
def test_malformed_messages_name_the_field(fields: dict[bytes, bytes], field: str) -> None:
    with pytest.raises(InvalidJob) as raised:
        decode_job(fields, 1024)
    assert raised.value.field == field


def test_answers_raise_the_same_typed_errors() -> None:
    errors = [
        HookError("p", "onX", "ValueError", "bad", "Traceback...\nValueError: bad"),
        HookTimeout("hook 'onX' timed out after 1 s", "p"),
        PluginCrashed("worker 12 exited", "p"),
        LoadError("onLoad raised", "p", "tb"),
        JobDeadLettered("j1", "p", "max_deliveries (3) reached", "PluginCrashed: x", 3),
        InvalidJob("args", "is not valid JSON"),
    ]
    for error in errors:
        body, ok = encode_answer(None, error, host="h", deliveries=1, max_bytes=1 << 20)
        answer = decode_answer(body, 1 << 20)
        assert not ok and not answer.ok and type(answer.error) is type(error)
        assert str(answer.error) == str(error) and answer.host == "h"
        for attribute in (
            "plugin",
            "hook",
            "traceback",
            "error_type",
            "last_error",
            "deliveries",
            "field",
        ):
            assert getattr(answer.error, attribute, None) == getattr(error, attribute, None)


def test_values_that_are_not_json_or_too_big_become_error_answers() -> None:
    body, ok = encode_answer(b"bytes", None, host="h", deliveries=1, max_bytes=1 << 20)
    assert not ok and isinstance(decode_answer(body, 1 << 20).error, InvalidJob)
    body, ok = encode_answer("x" * 5000, None, host="h", deliveries=1, max_bytes=1024)
    answer = decode_answer(body, 1 << 20)
    assert isinstance(answer.error, InvalidJob) and "over 1024" in str(answer.error)
    assert decode_answer(
        encode_answer([1, 2], None, host="h", deliveries=2, max_bytes=99)[0], 99
    ).value == [1, 2]
    for raw in (
        b"not json",
        b"[]",
        b'{"ok": 1}',
        b'{"ok": false, "error": {"class": "Nope", "message": "m"}}',
    ):
        assert isinstance(decode_answer(raw, 1 << 20).error, JobError)
    assert isinstance(decode_answer(b"x" * 100, 10).error, JobError)


def test_jobs_config_names_the_key() -> None:
    for mapping, key in (
        ({"url": "http://x"}, "jobs.url"),
        ({"url": "redis://"}, "jobs.url"),
        ({"lease": 2.0, "heartbeat": 1.0}, "jobs.heartbeat"),
        ({"max_deliveries": 0}, "jobs.max_deliveries"),
        ({"name": "has space"}, "jobs.name"),
        ({"batch_size": 0}, "jobs.batch_size"),
        ({"max_result_bytes": 10}, "jobs.max_result_bytes"),
    ):
        with pytest.raises(ConfigError) as raised:
            ManagerConfig.from_mapping({"jobs": mapping})
        assert raised.value.key == key
    config = ManagerConfig.from_mapping({"jobs": {"url": "redis://h:1/2", "name": "a:1"}}).jobs
    assert config == JobsConfig(url="redis://h:1/2", name="a:1") and config.consumer_name == "a:1"
    assert ":" in JobsConfig().consumer_name  # hostname:pid
