"""Lua scripts: each component's per-period work is one atomic script call.

Every script starts with the same prelude: read the server clock (``TIME``), check the
deployment record (``NS:meta``: the period, and an instance id that changes when Redis
lost its data), and hold the caller's lease.  Scripts validate before they write, so a
refusal never leaves a half-done change behind.
"""
from __future__ import annotations

PRELUDE = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The type of a key that exists with another type than `want`, else nil.
local function wrongtype(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then return t end
  return nil
end

-- Check (and, when missing, create) the deployment record.
-- Returns instance, changed | nil, code, detail.
local function meta_check(key, period, known, fresh, now)
  local bad = wrongtype(key, 'hash')
  if bad then return nil, 'wrongtype', key .. ' is a ' .. bad .. ', expected a hash' end
  local m = redis.call('HMGET', key, 'period_ms', 'instance')
  if not m[1] then
    redis.call('HSET', key, 'period_ms', period)
    m[1] = period
  end
  local p = tonumber(m[1])
  if not p or p ~= p or p <= 0 or p == math.huge or p ~= math.floor(p) then
    return nil, 'baddata', key .. ' has period_ms ' .. string.format('%q', tostring(m[1])):sub(1, 60) ..
      ', not a period in ms: fix it or delete ' .. key
  end
  if p ~= tonumber(period) then return nil, 'period', tostring(m[1]) end
  if not m[2] then
    redis.call('HSET', key, 'instance', fresh, 'created', now)
    m[2] = fresh
  end
  return m[2], (m[2] ~= known)
end

-- The holder of a lease, or nil when nobody holds it.  What no redismedian process writes
-- at a lease key (another type, or a string that never expires) is removed, not obeyed.
local function lease_get(key)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' then return nil end
  if t ~= 'string' or redis.call('PTTL', key) < 0 then
    redis.call('DEL', key)
    return nil
  end
  return redis.call('GET', key)
end

-- Hold a lease: take it when free, renew it when ours.  Returns true | false, holder.
local function lease_hold(key, owner, ttl)
  local cur = lease_get(key)
  if not cur then
    redis.call('SET', key, owner, 'PX', ttl)
    return true
  end
  if cur ~= owner then return false, cur end
  redis.call('PEXPIRE', key, ttl)
  return true
end

-- The registry version (NS:meta field 'registry'), incremented at every change of the backup.
local function registry_version(meta)
  local v = tonumber(redis.call('HGET', meta, 'registry') or '0')
  if not v or v ~= math.floor(v) or v < 0 or v > 1e15 then return 0 end   -- garbage
  return v
end

local function registry_bump(meta)
  if redis.call('TYPE', meta)['ok'] ~= 'hash' then return 0 end
  local v = registry_version(meta) + 1
  redis.call('HSET', meta, 'registry', v)
  return v
end

-- Keep the registry, its backup and the deregistration records consistent (O(1) unless something
-- changed).  A name leaves the registry only by deregistration, and every deregistration leaves
-- a record (NS:deregistered: name -> server ms):
-- * a registry that is not a set is garbage: overwritten with the backup (SUNIONSTORE replaces a
--   key of any type, so no role needs DEL on the registry); a backup or a record hash that is
--   not what it should be is replaced too;
-- * a registry that vanished while the backup lists two or more names was lost (DEL, eviction,
--   expiry): restored from the backup.  SREM of the last name deletes the key too, and Redis
--   cannot tell that from DEL: a vanished registry whose backup lists one name is taken as that
--   name's deregistration (recorded), unless the caller just saw Redis lose its data (`lost`);
-- * a registry that exists is authoritative: when its size differs from the backup's, names were
--   SREMed (deregistered: recorded) or SADDed by hand, and the backup becomes a copy of it.
-- Returns version, backup size, note ('' unless something was repaired), restored (boolean).
local function registry_guard(meta, reg, backup, dereg, now, lost)
  local note = ''
  local restored = false
  local bad = wrongtype(dereg, 'hash')
  if bad then
    redis.call('DEL', dereg)
    note = dereg .. ' was a ' .. bad .. ' (removed); '
  end
  local rt = redis.call('TYPE', reg)['ok']
  bad = wrongtype(backup, 'set')
  if bad then
    if rt == 'set' then redis.call('SUNIONSTORE', backup, reg) else redis.call('DEL', backup) end
    note = note .. backup .. ' was a ' .. bad .. ' (replaced); '
  end
  if rt ~= 'none' and rt ~= 'set' then
    redis.call('SUNIONSTORE', reg, backup)
    note = note .. reg .. ' was a ' .. rt .. ' (replaced by ' .. backup .. '); '
    rt = redis.call('TYPE', reg)['ok']
    restored = (rt == 'set')
  end
  local nb = redis.call('SCARD', backup)
  if rt == 'none' then
    if nb > 1 or (nb == 1 and lost) then
      redis.call('SUNIONSTORE', reg, backup)
      restored = true
      note = note .. reg .. ' had vanished: restored ' .. nb .. ' registrations from ' .. backup
    elseif nb == 1 then
      local last = redis.call('SRANDMEMBER', backup)
      redis.call('HSET', dereg, last, now)
      redis.call('SREM', backup, last)
      nb = 0
      registry_bump(meta)
    end
  elseif redis.call('SCARD', reg) ~= nb then
    for _, gone in ipairs(redis.call('SDIFF', backup, reg)) do
      redis.call('HSET', dereg, gone, now)
    end
    redis.call('SUNIONSTORE', backup, reg)
    nb = redis.call('SCARD', backup)
    registry_bump(meta)
  end
  return registry_version(meta), nb, note, restored
end

-- The shortest text that reads back as the same double.
local function fmt(x)
  for p = 15, 17 do
    local s = string.format('%.' .. p .. 'g', x)
    if tonumber(s) == x then return s end
  end
  return string.format('%.17g', x)
end

local function finite(x)
  return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge
end
"""

# KEYS: lease   ARGV: owner, ttl_ms
# -> {1} when the lease is now ours, {0, holder, pttl} when somebody else holds it.
LEASE_ACQUIRE = PRELUDE + r"""
local cur = lease_get(KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1}
end
return {0, cur, redis.call('PTTL', KEYS[1])}
"""

# KEYS: lease   ARGV: owner  -> 1 when released, 0 when not ours
LEASE_RELEASE = r"""
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: meta, signal, feed, lease
# ARGV: period_ms, known_instance, fresh_instance, owner, lease_ttl_ms,
#       epoch, name, value, status, error, signal_ttl_ms, feed_maxlen
GENERATOR_PUBLISH = PRELUDE + r"""
local now = now_ms()
local period = tonumber(ARGV[1])
local inst, changed, detail = meta_check(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now)
if not inst then return {changed, now, detail} end
local held, holder = lease_hold(KEYS[4], ARGV[4], ARGV[5])
if not held then return {'lease', now, holder} end
local epoch = tonumber(ARGV[6])
local cur = math.floor(now / period)
if cur < epoch then return {'early', now, inst} end
if cur > epoch then return {'late', now, inst, cur} end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'value', ARGV[8], 'epoch', ARGV[6], 'ts', now, 'status', ARGV[9])
if ARGV[10] ~= '' then redis.call('HSET', KEYS[2], 'error', ARGV[10]) end
redis.call('PEXPIRE', KEYS[2], ARGV[11])
local repaired = ''
local bad = wrongtype(KEYS[3], 'stream')
if bad then redis.call('DEL', KEYS[3]); repaired = KEYS[3] .. ' was a ' .. bad end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[12], '*', 'name', ARGV[7], 'epoch', ARGV[6],
           'value', ARGV[8], 'status', ARGV[9], 'error', ARGV[10], 'ts', now)
return {'ok', now, inst, changed and 1 or 0, repaired}
"""

# KEYS: meta, registry, lease, decision, status, index(epoch), ready(epoch), registry backup,
#       deregistration records
# ARGV: period_ms, known_instance, fresh_instance, owner, lease_ttl_ms,
#       epoch, name, value ('' = no decision), state, reason, signals,
#       decision_ttl_ms, status_ttl_ms, ready_ttl_ms, register ('1' at start-up)
# -> {'ok', now, instance, restored, submitted, reason, registry version, repair note}
#    {'deregistered', now, instance, registry version}
STRATEGY_REPORT = PRELUDE + r"""
local now = now_ms()
local period = tonumber(ARGV[1])
local inst, changed, detail = meta_check(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now)
if not inst then return {changed, now, detail} end
local ver, nb, note = registry_guard(KEYS[1], KEYS[2], KEYS[8], KEYS[9], now, changed)
local name = ARGV[7]
local restored = 0
if changed and ARGV[15] ~= '1' and redis.call('SISMEMBER', KEYS[2], name) == 1 then
  restored = 1   -- Redis lost its data; our registration is back (the trader or the backup restored it)
end
if redis.call('SISMEMBER', KEYS[2], name) == 0 then
  -- Absent: deregistered if there is a record of it; otherwise the registration itself was lost
  -- (Redis lost its data, a failover dropped the last writes, registry and backup deleted).
  if ARGV[15] ~= '1' and not changed and redis.call('HEXISTS', KEYS[9], name) == 1 then
    return {'deregistered', now, inst, ver}
  end
  redis.call('SADD', KEYS[2], name)
  if ARGV[15] ~= '1' then
    restored = 1
    -- Redis lost its data and the registry is being rebuilt: the first strategy back records when,
    -- and the trader publishes nothing for two epochs while the others register again.
    if changed and not redis.call('HGET', KEYS[1], 'recreated') then
      redis.call('HSET', KEYS[1], 'recreated', now)
    end
  end
end
if ARGV[15] == '1' or restored == 1 then
  redis.call('HDEL', KEYS[9], name)
  if redis.call('SADD', KEYS[8], name) == 1 then ver = registry_bump(KEYS[1]) end
end
local held, holder = lease_hold(KEYS[3], ARGV[4], ARGV[5])
if not held then return {'lease', now, holder} end
local epoch = tonumber(ARGV[6])
local cur = math.floor(now / period)
local state, reason, value = ARGV[9], ARGV[10], ARGV[8]
local submitted = 0
if value ~= '' and cur ~= epoch then
  state = 'error'
  reason = 'decision for epoch ' .. ARGV[6] .. ' came too late (server is in epoch ' .. cur .. ')'
  value = ''
end
if value ~= '' then
  if wrongtype(KEYS[4], 'hash') then redis.call('DEL', KEYS[4]) end
  redis.call('HSET', KEYS[4], 'value', value, 'epoch', ARGV[6], 'ts', now)
  redis.call('PEXPIRE', KEYS[4], ARGV[12])
  if wrongtype(KEYS[6], 'zset') then redis.call('DEL', KEYS[6]) end
  redis.call('ZADD', KEYS[6], value, name)
  redis.call('PEXPIRE', KEYS[6], ARGV[12])
  if redis.call('ZCARD', KEYS[6]) >= redis.call('SCARD', KEYS[2]) then
    if wrongtype(KEYS[7], 'list') then redis.call('DEL', KEYS[7]) end
    redis.call('RPUSH', KEYS[7], name)
    redis.call('PEXPIRE', KEYS[7], ARGV[14])
  end
  submitted = 1
end
if wrongtype(KEYS[5], 'hash') then redis.call('DEL', KEYS[5]) end
redis.call('HSET', KEYS[5], 'state', state, 'reason', reason, 'epoch', ARGV[6], 'ts', now,
           'signals', ARGV[11], 'value', value)
redis.call('PEXPIRE', KEYS[5], ARGV[13])
return {'ok', now, inst, restored, submitted, reason, ver, note}
"""

# KEYS: meta, registry, index(epoch), trader, medians, lease, fence, ready(epoch), scratch,
#       registry backup, traders (heartbeats), deregistration records
# ARGV: 1 period_ms, 2 known_instance, 3 fresh_instance, 4 owner, 5 lease_ttl_ms,
#       6 epoch, 7 final ('1' at the deadline), 8 medians_maxlen, 9 members_limit,
#       10 strategy status key prefix, 11 reasons_limit, 12 fence token held ('' if none),
#       13 instance of the registry this trader remembers ('' = remembers nothing),
#       14 its registry version, 15 its number of names,
#       16 highest fencing token this trader has seen, 17 last epoch this trader published,
#       18 heartbeat lifetime (ms), 19 deployment instance into which this trader restored every
#       registration it knew ('' if none)
# Every reply after the deployment check is {status, now, instance, ..., registry version, backup
# size, repair note}: the last three are always there, so the fields in between keep their places:
#   {'registry', now, inst, ...}                 the registry is not the one this trader remembers
#   {'standby', now, inst, holder, pttl, ...}    another trader leads (its lease expires in pttl ms)
#   {status, now, inst, token, took, extra..., ...}   leading: published (median, count), waiting
#                                    (have, registered), error / starting (reason), expired (epoch),
#                                    idle, done
TRADER_COLLECT = PRELUDE + r"""
local now = now_ms()
local period = tonumber(ARGV[1])
local inst, changed, detail = meta_check(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now)
if not inst then return {changed, now, detail} end
local ver, nb, note = registry_guard(KEYS[1], KEYS[2], KEYS[10], KEYS[12], now, changed)
local epoch = tonumber(ARGV[6])
local owner = ARGV[4]

-- Never lead or publish over a registry that changed since this trader last looked at it: it
-- first checks that every name that left was deregistered, and restores the others.
if ARGV[13] ~= '' and (inst ~= ARGV[13] or ver ~= tonumber(ARGV[14]) or nb ~= tonumber(ARGV[15])) then
  return {'registry', now, inst, ver, nb, note}
end

-- Heartbeats: every trader lists itself; stale or garbage entries are dropped.
local hb_ttl = tonumber(ARGV[18])
if wrongtype(KEYS[11], 'hash') then redis.call('DEL', KEYS[11]) end
local function heartbeat(role, extra)
  redis.call('HSET', KEYS[11], owner, role .. '|' .. now .. '|' .. extra)
  redis.call('PEXPIRE', KEYS[11], hb_ttl)
end

-- Leadership, fenced: the lease holds "owner|token"; a new leader increments the token.
local lease = lease_get(KEYS[6])
local token = ARGV[12]
local took = 0
if not lease then
  if wrongtype(KEYS[7], 'string') then redis.call('DEL', KEYS[7]) end
  local f = redis.call('GET', KEYS[7])
  if f and (not string.match(f, '^%d+$') or #f > 15) then
    -- Not a counter (INCR would fail, and no trader could ever lead): go on from the last
    -- token the trader record shows, so that tokens still only grow.
    local last = ''
    if redis.call('TYPE', KEYS[4])['ok'] == 'hash' then last = redis.call('HGET', KEYS[4], 'fence') or '' end
    if not string.match(last, '^%d+$') or #last > 15 then last = '0' end
    redis.call('SET', KEYS[7], last)
  end
  local t = redis.call('INCR', KEYS[7])
  -- Above every token this trader has seen, too: tokens only grow, even after Redis lost the counter.
  local floor = tonumber(ARGV[16]) or 0
  if t <= floor then
    t = floor + 1
    redis.call('SET', KEYS[7], t)
  end
  token = tostring(t)
  redis.call('SET', KEYS[6], owner .. '|' .. token, 'PX', ARGV[5])
  took = 1
elseif lease ~= owner .. '|' .. token then
  heartbeat('standby', lease)
  return {'standby', now, inst, lease, redis.call('PTTL', KEYS[6]), ver, nb, note}
else
  redis.call('PEXPIRE', KEYS[6], ARGV[5])
end
heartbeat('leader', token)
local hb = redis.call('HGETALL', KEYS[11])   -- a handful of traders
for i = 1, #hb, 2 do
  local ts = tonumber(string.match(hb[i + 1], '^%a+|(%d+)|') or '')
  if not ts or ts < now - hb_ttl then redis.call('HDEL', KEYS[11], hb[i]) end
end

local cur = math.floor(now / period)
if cur ~= epoch then return {'expired', now, inst, token, took, cur, ver, nb, note} end
if wrongtype(KEYS[4], 'hash') then redis.call('DEL', KEYS[4]) end
if took == 1 then
  redis.call('HSET', KEYS[4], 'state', 'starting', 'reason', 'a trader took the lead in epoch ' .. epoch,
             'epoch', epoch, 'ts', now, 'fence', token, 'leader', owner)
  redis.call('HDEL', KEYS[4], 'median', 'count')
end
-- Published already (by us, or by the leader before us)?  Garbage in the field is ignored.
local published = tonumber(redis.call('HGET', KEYS[4], 'published') or '')
-- Only this epoch counts: 'published' beyond the current epoch can only be garbage, and
-- obeying it would stop publication until the server clock caught up with it.  The trader also
-- remembers what it published itself (Redis may have lost the record since).
if published == epoch or (tonumber(ARGV[17]) or -1) >= epoch then
  return {'done', now, inst, token, took, ver, nb, note}
end

local function fail(reason, code)
  redis.call('HSET', KEYS[4], 'state', 'error', 'reason', reason, 'epoch', epoch, 'ts', now,
             'fence', token, 'leader', owner)
  redis.call('HDEL', KEYS[4], 'median', 'count')
  return {code or 'error', now, inst, token, took, reason, ver, nb, note}
end

-- While the registry is being rebuilt after Redis lost its data, strategies register again one by
-- one, each at its next report (within a period of Redis answering), and a median could leave
-- some of them out: publish nothing in the epoch the first strategy registered again
-- ('recreated') and the next.  Unless this trader restored every registration it knew into this
-- deployment record (ARGV[19]): then the registry is complete already, and the missing are
-- reported by name.
local recreated = tonumber(redis.call('HGET', KEYS[1], 'recreated') or '')
if recreated and ARGV[19] ~= inst then
  local c = math.floor(recreated / period)
  if c <= epoch and epoch < c + 2 then
    local reason = 'Redis lost its data (strategies registering again since epoch ' .. c ..
                   '): publishing again from epoch ' .. (c + 2)
    redis.call('HSET', KEYS[4], 'state', 'starting', 'reason', reason, 'epoch', epoch, 'ts', now,
               'fence', token, 'leader', owner)
    redis.call('HDEL', KEYS[4], 'median', 'count')
    return {'starting', now, inst, token, took, reason, ver, nb, note}
  end
end

local nreg = redis.call('SCARD', KEYS[2])
if nreg == 0 then
  redis.call('HSET', KEYS[4], 'state', 'idle', 'reason', 'no strategies registered', 'epoch', epoch,
             'ts', now, 'fence', token, 'leader', owner)
  redis.call('HDEL', KEYS[4], 'median', 'count')
  return {'idle', now, inst, token, took, ver, nb, note}
end
local bad = wrongtype(KEYS[3], 'zset')
if bad then
  -- the next strategy to submit repairs it: only an error once the deadline has come
  if ARGV[7] ~= '1' then return {'waiting', now, inst, token, took, 0, nreg, ver, nb, note} end
  return fail(KEYS[3] .. ' is a ' .. bad .. ', expected a sorted set of decisions')
end

local have = redis.call('ZINTERCARD', 2, KEYS[3], KEYS[2])
if have < nreg then
  if ARGV[7] ~= '1' then return {'waiting', now, inst, token, took, have, nreg, ver, nb, note} end
  local missing = redis.call('ZDIFF', 2, KEYS[2], KEYS[3])
  table.sort(missing)
  local limit = tonumber(ARGV[11])
  local parts = {}
  for i = 1, math.min(#missing, limit) do
    local m = missing[i]
    local skey = ARGV[10] .. m
    local why
    if wrongtype(skey, 'hash') then
      why = 'no decision (status unreadable)'
    else
      local st = redis.call('HMGET', skey, 'state', 'reason', 'epoch')
      if st[3] == tostring(epoch) and st[2] and st[2] ~= '' then
        why = string.sub(st[2], 1, 500)
      elseif st[3] then
        why = 'no decision (last report for epoch ' .. string.sub(st[3], 1, 40) .. ')'
      else
        why = 'no decision (not running?)'
      end
    end
    if #m > 64 then m = string.sub(m, 1, 64) .. '...' end
    parts[#parts + 1] = m .. ': ' .. why
  end
  if #missing > limit then parts[#parts + 1] = 'and ' .. (#missing - limit) .. ' more' end
  return fail(#missing .. ' of ' .. nreg .. ' strategies missing: ' .. table.concat(parts, '; '))
end

-- Every registered strategy delivered.  Drop decisions of strategies deregistered meanwhile.
local src = KEYS[3]
if redis.call('ZCARD', KEYS[3]) > nreg then
  redis.call('ZINTERSTORE', KEYS[9], 2, KEYS[3], KEYS[2], 'WEIGHTS', 1, 0)
  redis.call('PEXPIRE', KEYS[9], period)
  src = KEYS[9]
end
local lo = redis.call('ZRANGE', src, 0, 0, 'WITHSCORES')
local hi = redis.call('ZRANGE', src, -1, -1, 'WITHSCORES')
if not finite(tonumber(lo[2])) then
  if src == KEYS[9] then redis.call('DEL', KEYS[9]) end
  return fail(lo[1] .. ': decision is not a finite number (' .. lo[2] .. ')')
end
if not finite(tonumber(hi[2])) then
  if src == KEYS[9] then redis.call('DEL', KEYS[9]) end
  return fail(hi[1] .. ': decision is not a finite number (' .. hi[2] .. ')')
end
local median
if nreg % 2 == 1 then
  local r = redis.call('ZRANGE', src, (nreg - 1) / 2, (nreg - 1) / 2, 'WITHSCORES')
  median = tonumber(r[2])
else
  local r = redis.call('ZRANGE', src, nreg / 2 - 1, nreg / 2, 'WITHSCORES')
  local a, b = tonumber(r[2]), tonumber(r[4])
  median = (a + b) / 2
  -- Two finite decisions near the largest double overflow when added: halve first (exact then).
  if not finite(median) then median = a / 2 + b / 2 end
end
local text = fmt(median)
local members = ''
if nreg <= tonumber(ARGV[9]) then
  local names = redis.call('ZRANGE', src, 0, -1)
  table.sort(names)
  members = table.concat(names, ',')
end
if src == KEYS[9] then redis.call('DEL', KEYS[9]) end
if wrongtype(KEYS[5], 'stream') then redis.call('DEL', KEYS[5]) end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', 'epoch', epoch, 'median', text,
           'count', nreg, 'members', members, 'fence', token, 'ts', now)
redis.call('HSET', KEYS[4], 'state', 'ok', 'reason', '', 'epoch', epoch, 'median', text, 'count', nreg,
           'ts', now, 'fence', token, 'leader', owner, 'published', epoch)
redis.call('DEL', KEYS[8])
return {'published', now, inst, token, took, text, nreg, ver, nb, note}
"""

# KEYS: meta, registry, registry backup, deregistration records
# ARGV: period_ms, known_instance, fresh_instance, owner, lease_ttl_ms (unused),
#       registry version the caller remembers, name...
# Adds the names back to the registry and its backup; the version moves past both the current and
# the remembered one.  -> {'ok', now, instance, version, backup size, number added, first added...}
#                         {'changed', now, instance} when the caller's instance is not current
REGISTRY_RESTORE = PRELUDE + r"""
local now = now_ms()
local inst, changed, detail = meta_check(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now)
if not inst then return {changed, now, detail} end
if changed then return {'changed', now, inst} end
registry_guard(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now, false)
local added, shown = 0, {}
for i = 7, #ARGV do
  redis.call('SADD', KEYS[3], ARGV[i])
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then
    added = added + 1
    if #shown < 20 then shown[#shown + 1] = ARGV[i] end
  end
end
-- The trader never SADDs to the registry itself (its ACL user may not): the registry becomes the
-- union of itself and the backup.
if added > 0 then redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[3]) end
local ver = math.max(registry_version(KEYS[1]), tonumber(ARGV[6]) or 0) + 1
redis.call('HSET', KEYS[1], 'registry', ver)
local reply = {'ok', now, inst, ver, redis.call('SCARD', KEYS[3]), added}
for _, n in ipairs(shown) do reply[#reply + 1] = n end
return reply
"""

# KEYS: meta, registry, registry backup, deregistration records   ARGV: name
# `redismedian deregister`: remove the name from the registry and its backup and record the
# deregistration (so that removing the last strategy is told apart from losing the registry).
# -> {1, repair note} when removed, {0, repair note, registered names (up to 50)...} when not
DEREGISTER = PRELUDE + r"""
local now = now_ms()
local _, _, note = registry_guard(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now, false)
local removed = redis.call('SREM', KEYS[2], ARGV[1])
local removed_backup = redis.call('SREM', KEYS[3], ARGV[1])
if removed == 1 or removed_backup == 1 then
  redis.call('HSET', KEYS[4], ARGV[1], now)
  registry_bump(KEYS[1])
end
if removed == 1 then return {1, note} end
local reply = {0, note}
for _, n in ipairs(redis.call('SRANDMEMBER', KEYS[2], 50)) do reply[#reply + 1] = n end
return reply
"""
