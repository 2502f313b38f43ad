"""The host's channel over a real socketpair; the test plays the worker's end with real frames."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio

from autoweave_plugins.broker.fetch import FetchBroker
from autoweave_plugins.broker.service import RequestService
from autoweave_plugins.channel import ASSIGN_HOOK, PAUSE_READING_AT, Channel, Routes
from autoweave_plugins.errors import (
    FetchError,
    HookError,
    LoadError,
    PermissionDenied,
    PluginCrashed,
    ProtocolError,
    SandboxUnavailable,
    UnknownHook,
    UnsendableValue,
    WorkerError,
)
from autoweave_plugins.permissions.urls import OutboundPolicy
from autoweave_plugins.rpc import MAX_REPLY_MESSAGE, FrameDecoder, Kind, encode, wire_error
from tests.helpers.waiting import wait_until

WAIT = 5.0


@dataclass
class Seen:
    """What the channel routed to its owner, with an event per route to wait on."""

    requests: list[tuple[int, str, Any]] = field(default_factory=list)
    metrics: list[tuple[Any, Any, Any]] = field(default_factory=list)
    logs: list[tuple[int, Any]] = field(default_factory=list)
    violations: list[ProtocolError] = field(default_factory=list)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    routed: asyncio.Event = field(default_factory=asyncio.Event)

    def routes(self) -> Routes:
        def record(target: list[Any]) -> Any:
            def route(*args: Any) -> None:
                target.append(args if len(args) > 1 else args[0])
                self.routed.set()

            return route

        return Routes(
            request=record(self.requests),
            metric=record(self.metrics),
            log=record(self.logs),
            violation=record(self.violations),
            lost=self.lost.set,
        )

    async def next(self) -> None:
        await asyncio.wait_for(self.routed.wait(), WAIT)
        self.routed.clear()


class WorkerEnd:
    """The worker's end of the socketpair: real frames, read and written with the loop."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder()
        self.frames: list[Any] = []

    async def frame(self) -> Any:
        loop = asyncio.get_running_loop()
        while not self.frames:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 16), WAIT)
            assert data, "the host closed the channel"
            self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)

    async def send(self, frame: list[Any]) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, encode(frame))

    async def send_raw(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)


@dataclass
class Pair:
    channel: Channel
    worker: WorkerEnd
    seen: Seen


async def open_pair() -> Pair:
    host, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker.setblocking(False)
    seen = Seen()
    channel = Channel(seen.routes(), max_frame=1 << 16)
    channel.plugin = "demo"
    await channel.open(host)
    return Pair(channel, WorkerEnd(worker), seen)


def close_pair(pair: Pair) -> None:
    pair.channel.close("test over")
    pair.worker.sock.close()


@pytest_asyncio.fixture
async def pair() -> AsyncIterator[Pair]:
    opened = await open_pair()
    try:
        yield opened
    finally:
        close_pair(opened)


async def call(pair: Pair, hook: str = "onJob", timeout: float | None = WAIT) -> asyncio.Task[Any]:
    """Start a CALL and return it once the worker end has read the frame."""
    ident = pair.channel.next_id()
    task = asyncio.ensure_future(
        pair.channel.request([Kind.CALL, ident, hook, [1], {}], hook, timeout)
    )
    frame = await pair.worker.frame()
    assert frame == [Kind.CALL, ident, hook, [1], {}]
    return task


async def test_a_result_answers_its_request(pair: Pair) -> None:
    task = await call(pair)
    await pair.worker.send([Kind.RESULT, 1, {"ok": True}])
    assert await task == {"ok": True}


async def test_a_frame_split_across_reads_survives_another_channel_reading_between(
    pair: Pair,
) -> None:
    """The channels of a thread read into one buffer: what one keeps of a read is a copy."""
    other = await open_pair()
    try:
        mine, theirs = await call(pair), await call(other)
        wire = encode([Kind.RESULT, 1, "x" * 3000])
        await pair.worker.send_raw(wire[:2000])
        await wait_until(lambda: pair.channel.decoder.buffered == 2000, what="half a frame read")
        await other.worker.send([Kind.RESULT, 1, "y" * 3000])  # read over the same buffer
        assert await theirs == "y" * 3000
        await pair.worker.send_raw(wire[2000:])
        assert await mine == "x" * 3000
    finally:
        close_pair(other)


async def test_ids_pair_answers_out_of_order(pair: Pair) -> None:
    first, second = await call(pair), await call(pair)
    await pair.worker.send([Kind.RESULT, 2, "second"])
    await pair.worker.send([Kind.RESULT, 1, "first"])
    assert (await first, await second) == ("first", "second")


async def test_error_frames_become_the_hosts_exceptions(pair: Pair) -> None:
    task = await call(pair)
    await pair.worker.send(
        [Kind.ERROR, 1, wire_error("ValueError", "bad input", "Traceback ...\nValueError")]
    )
    with pytest.raises(HookError) as caught:
        await task
    error = caught.value
    assert (error.plugin, error.hook, error.error_type) == ("demo", "onJob", "ValueError")
    assert (error.error_message, error.traceback) == ("bad input", "Traceback ...\nValueError")

    task = await call(pair, "onMissing")
    await pair.worker.send([Kind.ERROR, 2, wire_error("UnknownHook", "not declared", "")])
    with pytest.raises(UnknownHook, match="not declared"):
        await task


async def test_a_failed_assignment_is_a_load_error(pair: Pair) -> None:
    async def assign() -> asyncio.Task[Any]:
        ident = pair.channel.next_id()
        task = asyncio.ensure_future(
            pair.channel.request([Kind.ASSIGN, ident, {}], ASSIGN_HOOK, WAIT)
        )
        assert (await pair.worker.frame())[0] == Kind.ASSIGN
        return task

    task = await assign()
    await pair.worker.send([Kind.ERROR, 1, wire_error("ImportError", "no module x", "tb")])
    with pytest.raises(LoadError, match="ImportError: no module x") as caught:
        await task
    assert caught.value.traceback == "tb"

    task = await assign()
    detail = "strict mode: missing sandbox layers: landlock, seccomp"
    await pair.worker.send([Kind.ERROR, 2, wire_error("SandboxUnavailable", detail, "")])
    with pytest.raises(SandboxUnavailable) as unavailable:
        await task
    assert unavailable.value.missing == ("landlock", "seccomp")


async def test_one_way_frames_go_to_their_routes(pair: Pair) -> None:
    await pair.worker.send([Kind.REQUEST, 7, "fetch", {"url": "https://x/"}])
    await pair.seen.next()
    await pair.worker.send([Kind.METRIC, 0, "jobs", 1.5, {"kind": "a"}])
    await pair.seen.next()
    await pair.worker.send([Kind.LOG, 0, 20, "hello"])
    await pair.seen.next()
    assert pair.seen.requests == [(7, "fetch", {"url": "https://x/"})]
    assert pair.seen.metrics == [("jobs", 1.5, {"kind": "a"})]
    assert pair.seen.logs == [(20, "hello")]
    assert pair.seen.violations == []


async def test_ready_resolves_once_and_twice_is_a_violation(pair: Pair) -> None:
    await pair.worker.send([Kind.READY, 0, {"pid": 1}])
    assert await asyncio.wait_for(pair.channel.ready, WAIT) == {"pid": 1}
    await pair.worker.send([Kind.READY, 0, {"pid": 1}])
    await pair.seen.next()
    assert "READY sent twice" in str(pair.seen.violations[0])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (encode([99, 0]), "unknown frame kind"),
        (encode([Kind.RESULT, 1]), "must have 3 fields"),
        (b"\x00\x00\x00\x03\xc1\xc1\xc1", "malformed frame"),
        ((1 << 20).to_bytes(4, "big"), "exceeds the 65536-byte limit"),
    ],
)
async def test_a_violation_fails_everything_in_flight(
    pair: Pair, data: bytes, message: str
) -> None:
    task = await call(pair)
    await pair.worker.send_raw(data)
    with pytest.raises(ProtocolError, match=message) as caught:
        await task
    assert caught.value.plugin == "demo"
    assert message in str(pair.seen.violations[0])


async def test_replies_to_ids_never_sent_are_violations_but_late_ones_are_not(
    pair: Pair,
) -> None:
    task = await call(pair, timeout=0.01)
    with pytest.raises(TimeoutError):
        await task
    assert pair.channel.pending(1) is not None  # kept, so a late answer is recognised
    await pair.worker.send([Kind.RESULT, 1, "late"])
    await pair.worker.send([Kind.RESULT, 2, "never asked"])
    await pair.seen.next()
    assert [str(v) for v in pair.seen.violations] == ["reply to request 2, which was never sent"]


@pytest.mark.parametrize("ident", [True, 1.0])
async def test_a_result_whose_id_only_equals_a_request_is_a_violation(
    pair: Pair, ident: object
) -> None:
    """True and 1.0 hash as 1: a result must name its request by an int to answer it."""
    task = await call(pair)
    await pair.worker.send([Kind.RESULT, ident, "forged"])
    with pytest.raises(ProtocolError, match="frame id must be a non-negative integer"):
        await task
    assert len(pair.seen.violations) == 1


async def test_cancelling_a_call_cancels_it_in_the_worker(pair: Pair) -> None:
    task = await call(pair)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await pair.worker.frame() == [Kind.CANCEL, 1]
    assert pair.channel.pending(1) is None


async def test_arguments_msgpack_cannot_carry_fail_before_sending(pair: Pair) -> None:
    # A typed refusal of the host's (UnsendableValue), not a WorkerError: the plugin is not at fault.
    with pytest.raises(UnsendableValue, match="cannot be sent to the worker"):
        await pair.channel.request([Kind.CALL, pair.channel.next_id(), "h", [object()], {}], "h", 1)
    assert pair.channel.pending(1) is None


async def test_close_fails_requests_and_ready_naming_the_reason(pair: Pair) -> None:
    task = await call(pair)
    pair.channel.close("memory")
    with pytest.raises(PluginCrashed, match=r"worker exited \(memory\) during onJob"):
        await task
    with pytest.raises(WorkerError, match=r"before it was ready \(memory\)"):
        await pair.channel.ready


async def test_the_worker_leaving_is_reported(pair: Pair) -> None:
    pair.worker.sock.close()
    await asyncio.wait_for(pair.seen.lost.wait(), WAIT)


async def test_file_descriptors_travel_with_their_frame(pair: Pair) -> None:
    read_end, write_end = os.pipe()
    try:
        ident = pair.channel.next_id()
        task = asyncio.ensure_future(
            pair.channel.request([Kind.ASSIGN, ident, {}], ASSIGN_HOOK, WAIT, fds=[write_end])
        )
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        loop.add_reader(pair.worker.sock, readable.set_result, None)
        try:
            await asyncio.wait_for(readable, WAIT)
        finally:
            loop.remove_reader(pair.worker.sock)
        data, fds, _flags, _addr = socket.recv_fds(pair.worker.sock, 1 << 16, 4)
        assert len(fds) == 1 and pair.worker.decoder.feed(data) == [[Kind.ASSIGN, 1, {}]]
        os.write(fds[0], b"x")
        os.close(fds[0])
        assert os.read(read_end, 1) == b"x"
        await pair.worker.send([Kind.RESULT, 1, None])
        assert await task is None
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_refusals_reach_the_worker_as_wire_errors(pair: Pair) -> None:
    pair.channel.reply_error(3, PermissionDenied("network.outbound", "not in the manifest"))
    pair.channel.reply_error(4, FetchError("timed out"))
    pair.channel.reply(5, {"status": 200})
    assert await pair.worker.frame() == [
        Kind.REPLY_ERROR,
        3,
        {"type": "PermissionDenied", "message": "not in the manifest"},
    ]
    assert await pair.worker.frame() == [
        Kind.REPLY_ERROR,
        4,
        {"type": "FetchError", "message": "timed out"},
    ]
    assert await pair.worker.frame() == [Kind.REPLY, 5, {"status": 200}]


async def test_the_request_service_refuses_past_its_cap(pair: Pair) -> None:
    """Without a broker every request is refused; past the cap, refused without starting."""
    service = RequestService(pair.channel, max_concurrent_requests=0)
    service.submit(1, "fetch", {})
    assert await pair.worker.frame() == [
        Kind.REPLY_ERROR,
        1,
        {"type": "FetchError", "message": "more than 0 requests at once"},
    ]
    service = RequestService(pair.channel)
    service.submit(2, "fetch", {"url": "https://example.com/"})
    frame = await pair.worker.frame()
    assert frame[:2] == [Kind.REPLY_ERROR, 2]
    assert frame[2]["type"] == "PermissionDenied"
    assert service.in_flight == 0


async def test_an_unknown_request_is_a_violation_that_quotes_nothing(pair: Pair) -> None:
    await pair.worker.send([Kind.REQUEST, 1, "x" * 5000, {}])
    await pair.seen.next()
    assert pair.seen.requests == []
    assert len(str(pair.seen.violations[0])) < 200
    await pair.worker.send([Kind.REQUEST, 2, "fetch", ["not", "a", "map"]])
    await pair.seen.next()
    assert len(pair.seen.violations) == 2


async def test_error_replies_never_carry_the_request_back(pair: Pair) -> None:
    """The broker quotes a bad method in its error; the reply stays small whatever was sent."""
    async with httpx.AsyncClient() as client:
        service = RequestService(pair.channel)
        service.fetch = FetchBroker(OutboundPolicy([]), client)
        service.submit(1, "fetch", {"url": "https://example.com/", "method": "M" * 100_000})
        frame = await pair.worker.frame()
    assert frame[:2] == [Kind.REPLY_ERROR, 1] and frame[2]["type"] == "FetchError"
    assert len(frame[2]["message"]) <= MAX_REPLY_MESSAGE
    assert frame[2]["message"].endswith("PUT")  # the reason, at the end, is kept


async def test_reading_pauses_while_replies_are_backed_up(pair: Pair) -> None:
    transport = pair.channel.transport
    assert transport is not None and transport.is_reading()
    sent = 0
    while transport.get_write_buffer_size() <= PAUSE_READING_AT:
        pair.channel.reply(sent, b"x" * (256 << 10))
        sent += 1
    assert not transport.is_reading()  # nothing more is read that would want an answer
    for _ in range(sent):
        assert (await pair.worker.frame())[0] == Kind.REPLY
    assert transport.is_reading() and pair.seen.violations == []


async def test_a_worker_that_does_not_read_is_cut_off_at_the_cap() -> None:
    host, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker.setblocking(False)
    seen = Seen()
    channel = Channel(seen.routes(), max_write_buffer=1 << 20)
    await channel.open(host)
    try:
        task = asyncio.ensure_future(
            channel.request([Kind.PING, channel.next_id()], "<ping>", WAIT)
        )
        assert (await WorkerEnd(worker).frame())[0] == Kind.PING  # then it stops reading
        transport = channel.transport
        assert transport is not None
        for ident in range(1000):  # the kernel's socket buffer first, then the host's
            channel.reply(ident, b"x" * (64 << 10))
            assert transport.get_write_buffer_size() <= 1 << 20
            if seen.violations:
                break
        assert "is not reading its channel" in str(seen.violations[0])
        with pytest.raises(ProtocolError, match="not reading its channel"):
            await task
    finally:
        channel.close("test over")
        worker.close()
