"""The Lua scripts that make each step of a job atomic in Redis.

Every step that changes who holds a job first checks, in the same script, that this host still
holds it: the entry is in the group's pending list under this consumer's name. That check is
the fence. A host that was frozen past its lease and has since lost the job to another host
(XAUTOCLAIM moved the entry to it) can no longer answer, renew or release it: its late answer
is dropped and counted as a ``duplicate``. ``SET NX`` on the answer key is the second guard:
whatever happens, a job id gets one answer.

redis-py's ``Script`` runs them by EVALSHA and loads them again after a server restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis

__all__ = ["Claimed", "Scripts"]

_OWNER = """
local function owned(stream, group, id, consumer)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  return #p > 0 and p[1][2] == consumer
end
"""

SUBMIT = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
"""

# KEYS: stream, result, stats, error  ARGV: group, entry, consumer, answer, ttl ms, counter, channel
FINISH = (
    _OWNER
    + """
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  redis.call('HINCRBY', KEYS[3], 'duplicate', 1)
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[4])
if not redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[5]) then
  redis.call('HINCRBY', KEYS[3], 'duplicate', 1)
  return 2
end
redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
redis.call('PUBLISH', ARGV[7], ARGV[6])
return 1
"""
)

# KEYS: stream, dead stream, result, stats, error
# ARGV: group, entry, consumer, answer ('' if the message has no usable id), ttl ms,
#       dead maxlen, channel, then the dead entry's field/value pairs
DEAD = (
    _OWNER
    + """
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[5])
redis.call('HINCRBY', KEYS[4], 'dead', 1)
if ARGV[4] ~= '' and redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PX', ARGV[5]) then
  redis.call('PUBLISH', ARGV[7], 'dead')
end
return 1
"""
)

# Give a job back after its worker crashed: keep the error for its dead letter, and make the
# entry look idle for a whole lease so that the next XAUTOCLAIM (of any host) takes it now.
# JUSTID: this is not a delivery; the reclaim that follows counts one.
# KEYS: stream, error  ARGV: group, entry, consumer, idle ms, error text, ttl ms
RELEASE = (
    _OWNER
    + """
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[6])
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'IDLE', ARGV[4], 'JUSTID')
return 1
"""
)

# Renew the leases this host still holds (idle back to 0, JUSTID: not a delivery); returns the
# entries it no longer holds. XCLAIM alone would take back a job another host reclaimed.
# KEYS: stream  ARGV: group, consumer, entry ids...
HEARTBEAT = (
    _OWNER
    + """
local lost = {}
for i = 3, #ARGV do
  if owned(KEYS[1], ARGV[1], ARGV[i], ARGV[2]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""
)

# Take over entries whose lease expired (XAUTOCLAIM), with each one's delivery count and the
# host that held it. Entries deleted while pending (trimmed by another producer's MAXLEN) come
# back as nil from Redis 6.2 and stay pending: acknowledge those, or they would be reclaimed
# for ever. Redis 7 drops them from the pending list itself.
# KEYS: stream, stats  ARGV: group, consumer, min idle ms, cursor, count
RECLAIM = """
local before = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', ARGV[5])
local owners = {}
for _, p in ipairs(before) do owners[p[1]] = p[2] end
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out, seen, gone = {}, {}, 0
for _, entry in ipairs(r[2]) do
  if entry then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    out[#out + 1] = {entry[1], entry[2], p[1][4], owners[entry[1]] or ''}
    seen[entry[1]] = true
  end
end
for id, _ in pairs(owners) do
  if not seen[id] and #redis.call('XRANGE', KEYS[1], id, id) == 0 then
    redis.call('XACK', KEYS[1], ARGV[1], id)
    gone = gone + 1
  end
end
if #out > 0 then redis.call('HINCRBY', KEYS[2], 'redelivered', #out) end
return {r[1], out, gone}
"""


class Claimed:
    """An entry taken over by ``reclaim``: its fields, delivery count and previous holder."""

    __slots__ = ("deliveries", "entry_id", "fields", "previous")

    def __init__(
        self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int, previous: str
    ) -> None:
        self.entry_id = entry_id
        self.fields = fields
        self.deliveries = deliveries
        self.previous = previous


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class Scripts:
    """The scripts registered on one client; each method is one atomic round trip."""

    def __init__(self, redis: Redis) -> None:
        self._submit = redis.register_script(SUBMIT)
        self._finish = redis.register_script(FINISH)
        self._dead = redis.register_script(DEAD)
        self._release = redis.register_script(RELEASE)
        self._heartbeat = redis.register_script(HEARTBEAT)
        self._reclaim = redis.register_script(RECLAIM)

    async def submit(self, stream: str, max_len: int, fields: dict[str, bytes]) -> bytes | None:
        """XADD unless the stream is full; the entry id, or None when full."""
        flat: list[Any] = [max_len]
        for key, value in fields.items():
            flat += [key, value]
        return cast(bytes | None, await self._submit(keys=[stream], args=flat))

    async def finish(self, keys: Sequence[str], args: Sequence[Any]) -> int:
        """1 recorded, 0 not ours any more (a late duplicate), 2 an answer already existed."""
        return int(await self._finish(keys=list(keys), args=list(args)))

    async def dead(self, keys: Sequence[str], args: Sequence[Any]) -> int:
        """1 dead-lettered, 0 not ours any more."""
        return int(await self._dead(keys=list(keys), args=list(args)))

    async def release(self, keys: Sequence[str], args: Sequence[Any]) -> int:
        return int(await self._release(keys=list(keys), args=list(args)))

    async def heartbeat(
        self, stream: str, group: str, consumer: str, entries: Sequence[bytes]
    ) -> list[bytes]:
        """Renew the leases; returns the entries this host no longer holds."""
        lost = await self._heartbeat(keys=[stream], args=[group, consumer, *entries])
        return list(cast(list[bytes], lost))

    async def reclaim(
        self,
        stream: str,
        stats: str,
        group: str,
        consumer: str,
        min_idle_ms: int,
        cursor: bytes,
        count: int,
    ) -> tuple[bytes, list[Claimed], int]:
        """(next cursor, entries taken over, entries found deleted and acknowledged)."""
        reply = await self._reclaim(
            keys=[stream, stats], args=[group, consumer, min_idle_ms, cursor, count]
        )
        cursor_out, entries, gone = cast(list[Any], reply)
        claimed = [
            Claimed(e[0], _pairs(e[1]), int(e[2]), e[3].decode(errors="replace")) for e in entries
        ]
        return cast(bytes, cursor_out), claimed, int(gone)
