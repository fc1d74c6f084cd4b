"""The Lua scripts of the Redis backplane: publish and replay, each atomic in Redis."""

from __future__ import annotations

from typing import Final

# The stream's epoch and offset; a new epoch when the meta hash is missing or was written by
# another Redis process (its state may be older than what clients saw). A new epoch empties the
# log, so the log only ever holds one epoch, with consecutive offsets.
LOCATE: Final = """
local function locate(meta, log, nonce, now)
  local server = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
  local state = redis.call('HMGET', meta, 'epoch', 'offset', 'server')
  if state[1] and state[3] == server then
    return state[1], tonumber(state[2]), server, false
  end
  redis.call('DEL', log)
  return string.format('%x%05x', now[1], now[2]) .. nonce, 0, server, true
end
local function millis(now) return now[1] * 1000 + math.floor(now[2] / 1000) end
"""

# KEYS: meta, log. ARGV: channel, message head, entry, history_size, ttl_ms, nonce.
# XADD is the first write that needs memory, so an OOM error leaves the stream untouched.
PUBLISH_LUA: Final = (
    LOCATE
    + """
local now = redis.call('TIME')
local epoch, offset, server = locate(KEYS[1], KEYS[2], ARGV[6], now)
offset = offset + 1
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'o', offset, 'p', ARGV[3])
redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', offset, 'server', server)
local ttl = tonumber(ARGV[5])
local horizon = millis(now) - ttl
if horizon > 0 then
  redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%.0f', horizon))
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PUBLISH', ARGV[1], ARGV[2] .. cmsgpack.pack(epoch, offset) .. ARGV[3])
return {epoch, offset}
"""
)

# KEYS: meta, log. ARGV: since epoch ('' for none), since offset, history_size, ttl_ms, nonce.
# Returns {epoch, offset, complete, entries newest first}. Only the newest `history_size`
# entries younger than `ttl_ms` (by Redis' clock) count as history.
REPLAY_LUA: Final = (
    LOCATE
    + """
local now = redis.call('TIME')
local epoch, offset, server, new = locate(KEYS[1], KEYS[2], ARGV[5], now)
local ttl = tonumber(ARGV[4])
if new then redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0, 'server', server) end
redis.call('PEXPIRE', KEYS[1], ttl)
if ARGV[1] == '' then return {epoch, offset, 1, {}} end
local since = tonumber(ARGV[2])
local missed = offset - since
if ARGV[1] ~= epoch or missed < 0 or missed > tonumber(ARGV[3]) then
  return {epoch, offset, 0, {}}
end
if missed == 0 then return {epoch, offset, 1, {}} end
local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', missed)
local oldest = entries[missed]
if not oldest or tonumber(oldest[2][2]) ~= since + 1
    or tonumber(string.match(oldest[1], '^%d+')) < millis(now) - ttl then
  return {epoch, offset, 0, {}}
end
return {epoch, offset, 1, entries}
"""
)
