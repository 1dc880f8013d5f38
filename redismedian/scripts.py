"""Lua scripts, each with its typed wrapper: every atomic step of a component is one script call.

``PRELUDE`` holds the helpers the scripts share (the server clock, the number grammar, the
deployment record check, leases, the registry guard, the epoch); it checks nothing by itself.  What
each script checks before it acts (the deployment record ``NS:meta``: the period, and an instance id
that changes when Redis lost its data; the caller's lease):

=====================  ==============================  =====================================
script                 deployment record               caller's lease
=====================  ==============================  =====================================
LEASE_ACQUIRE/RELEASE  no                              it is the lease
META_CREATE            creates it when missing         no
GENERATOR_PUBLISH      yes                             held (taken or renewed)
STRATEGY_REPORT        when the caller asks            held (taken or renewed)
STRATEGY_DOORBELL      no                              no: the fast path reads the lease back
                                                       in the same pipeline (strategy_ticked)
TRADER_TICK            yes, creates it when missing    the trader lead: taken or renewed
TRADER_SETTLE          yes                             the lead checked (owner|token), not renewed
TRADER_ACTED           no                              the lead checked
TRADER_RESTORE         no                              none (it writes back what the
                                                       caller published and saw acknowledged)
REGISTRY_ADMIT         yes                             none (it reads the strategies' leases)
REGISTRY_RESTORE       yes, creates it when missing    none
DEREGISTER             no                              none (the operator's command)
=====================  ==============================  =====================================

A refusal (any answer but the one that goes on) never writes what the caller asked for, but some
come after changes that stand.  The registry guard (in TRADER_TICK, TRADER_SETTLE, REGISTRY_ADMIT,
REGISTRY_RESTORE and DEREGISTER) runs first, right after the deployment record check: its repairs
and the deregistrations it records stay, whatever the script answers next.  A script removes
garbage at a key of its own on the way.  TRADER_TICK writes its heartbeat before it answers
``standby``, and takes the lead (incrementing the fence) before it can still answer ``expired``
(or, after writing ``NS:trader``, ``done`` or ``starting``); GENERATOR_PUBLISH renews its lease
before it answers ``early`` or ``late``; STRATEGY_REPORT writes the decision key before it answers
``deregistered`` (the trader never counts it: the name is not registered).

Each script has one wrapper beside its text: a function that builds KEYS and ARGV from named
parameters, and a NamedTuple for its reply, so that no caller indexes a reply by position.  Every
key a script touches is declared in KEYS: none is built inside the Lua (Redis Cluster and the ACL
both depend on that).

Who writes what (the invariant that the ACL in acl.py enforces, docs/guarantees.md):

* a strategy writes only its own lease and decision key, and may ring doorbells (the per-epoch
  counter, an integer, and two pub/sub channels, ``ready`` and ``joins``, which store nothing), which
  can at most make the trader look early or late;
* a generator writes only its own lease, signal hash and feed;
* the registry, its backup, the deregistration records, the deployment record, the trader's state
  and the medians are written only by the trader's scripts and by ``redismedian deregister``.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, NamedTuple, Sequence

from redis.exceptions import NoScriptError

from .keys import Keys
from .text import LONG, quoted, shown

# run(source, keys, args) -> the raw reply (a list, or an integer for the lease release), after the
# caller's common checks (Component.run_script)
Runner = Callable[[str, Sequence[Any], Sequence[Any]], Any]

REASON_LIMIT = 2000     # characters of a strategy's reason kept in its decision key
# More messages than this on NS:joins within one period (or than twice the registrations) is a flood:
# the trader says so.  Far more than any deployment asks with at once (a restart of every strategy
# asks with as many names as there are strategies, which the registrations already count).
JOINS_FLOOD = 10_000
# The longest decision key value any strategy writes (a reason of REASON_LIMIT characters of up to 4
# bytes each, and the epoch).  A longer one is not a report, whoever wrote it: it is refused unread
# (the trader reads such a key with GETRANGE from then on, never whole).
DECISION_MAX_BYTES = 8192

PRELUDE = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Epoch E = floor(server ms / period ms), as clock.epoch_of says in Python.
local function epoch_of(ms, period)
  return math.floor(ms / period)
end

-- The one number grammar (common.parse_number mirrors it): optional sign, digits with at most one
-- decimal point, optional exponent; finite.  tonumber alone would also take spaces, hex, 'inf' and
-- 'nan': no other character than these passes the first test, and for these tonumber's grammar
-- (C strtod's) is exactly ours.
local function num(s)
  if type(s) ~= 'string' or #s == 0 or string.find(s, '[^0-9eE.+-]') then return nil end
  local x = tonumber(s)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return nil end
  return x
end

-- An integer in the same grammar (no fraction, no exponent, at most 15 digits: exact in a double).
local function int(s)
  if type(s) ~= 'string' or not string.find(s, '^[+-]?%d+$') or #string.gsub(s, '^[+-]', '') > 15 then
    return nil
  end
  return tonumber(s)
end

-- The type of a key that exists with another type than `want`, else nil.
local function wrongtype(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then return t end
  return nil
end

-- The value of field `name` in a flat field list (a stream entry's fields), else nil.
local function field(f, name)
  for i = 1, #f, 2 do
    if f[i] == name then return f[i + 1] end
  end
end

-- Set the integer at `key` to `text` (an integer's text) unless it already holds as much: never lower.
local function raise_to(key, text)
  local cur, n = int(redis.call('GET', key) or ''), int(text)
  if n and (not cur or cur < n) then redis.call('SET', key, text) end
end

-- Check (and, when `create`, create) the deployment record.
-- Returns instance, changed | nil, code, detail.  Codes: wrongtype, baddata, period, nometa.
local function meta_check(key, period, known, fresh, now, create)
  local m = redis.pcall('HMGET', key, 'period_ms', 'instance')
  if m['err'] then
    local bad = wrongtype(key, 'hash')
    if bad then return nil, 'wrongtype', key .. ' is a ' .. bad .. ', expected a hash' end
    redis.call('HMGET', key, 'period_ms')   -- raises the same error (e.g. NOPERM)
  end
  if not m[1] or not m[2] then
    if not create then return nil, 'nometa', key end
    if not m[1] then
      redis.call('HSET', key, 'period_ms', period)
      m[1] = period
    end
    if not m[2] then
      redis.call('HSET', key, 'instance', fresh, 'created', now)
      m[2] = fresh
    end
  end
  local p = num(m[1])      -- a whole number of ms (common.parse_period_ms says the same)
  if not p or p <= 0 or p ~= math.floor(p) then
    -- Text from data stays bounded here too: cut before quoting (whatever its size), and the
    -- Python side escapes what %q leaves (preamble(), redismedian.text.shown).
    return nil, 'baddata', key .. ' has period_ms ' .. string.format('%q', string.sub(tostring(m[1]), 1, 40)) ..
      ', not a period in ms: fix it or delete ' .. key
  end
  if p ~= tonumber(period) then return nil, 'period', tostring(m[1]) end
  return m[2], (m[2] ~= known)
end

-- The holder of a lease, or nil when nobody holds it.  What no redismedian process writes at a
-- lease key (another type, or a string that never expires) is removed, not obeyed.
local function lease_get(key)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' then return nil end
  if t ~= 'string' or redis.call('PTTL', key) < 0 then
    redis.call('DEL', key)
    return nil
  end
  return redis.call('GET', key)
end

-- A lease value "<owner>|<extra>" (extra: a strategy's start in server ms, the trader's fencing
-- token), split on the last '|' as health.split_lease does in Python.  Returns owner, extra (nil
-- when there is no '|').
local function lease_split(value)
  local owner, extra = string.match(value, '^(.*)|([^|]*)$')
  if not owner then return value, nil end
  return owner, extra
end

-- The same, for somebody else's lease: read, never repaired.
local function lease_peek(key)
  if redis.call('TYPE', key)['ok'] ~= 'string' or redis.call('PTTL', key) < 0 then return nil end
  return redis.call('GET', key)
end

-- Hold our own lease: renew it when ours, take it when free.  Returns true | false, holder.
-- Two commands when we hold it (the hot path of every report).
local function lease_hold(key, owner, ttl)
  local cur = redis.pcall('GET', key)
  if type(cur) == 'table' then              -- not a string: garbage at our own key
    redis.call('DEL', key)
    cur = false
  end
  if cur == owner then
    redis.call('PEXPIRE', key, ttl)
    return true
  end
  if cur and redis.call('PTTL', key) >= 0 then return false, cur end
  redis.call('SET', key, owner, 'PX', ttl)
  return true
end

-- The registry version as the deployment record holds it (NS:meta field 'registry'), or nil: not
-- there, or a record that is not a hash.  Every change of the backup writes it (registry_bump,
-- REGISTRY_RESTORE), so it is there whenever the backup lists a name, until Redis loses its data
-- (FLUSHALL, a restart without persistence, the record evicted or deleted): the record comes back
-- without it.  An SREM leaves it.
local function registry_field(meta)
  local v = redis.pcall('HGET', meta, 'registry')
  if type(v) == 'table' and v['err'] then
    if wrongtype(meta, 'hash') then return nil end
    redis.call('HGET', meta, 'registry')   -- raises the same error (e.g. NOPERM)
  end
  if type(v) ~= 'string' then return nil end
  return v
end

-- The registry version, incremented at every change of the backup (0: missing or garbage).
local function registry_version(meta)
  local v = int(registry_field(meta) or '')
  if not v or v < 0 then return 0 end
  return v
end

local function registry_bump(meta)
  if redis.call('TYPE', meta)['ok'] ~= 'hash' then return 0 end
  local v = registry_version(meta) + 1
  redis.call('HSET', meta, 'registry', v)
  return v
end

-- After Redis lost its data with no trader that remembered the registry, strategies register
-- again one by one, each at its next report (REGISTRY_ADMIT marks the record 'recreated' when it
-- admits a strategy that started before the record was created).  Publish nothing in the epoch
-- that happened and the next, so that no median leaves some of them out; unless the trader restored
-- every registration it knew into this record (`restored` is that record's instance).
-- Returns the reason, or nil.
local function regrowing(meta, period, epoch, inst, restored)
  local recreated = int(redis.call('HGET', meta, 'recreated') or '')
  if not recreated or restored == inst then return nil end
  local c = epoch_of(recreated, period)
  if c <= epoch and epoch < c + 2 then
    return 'registry being rebuilt since epoch ' .. c .. ' (strategies older than the deployment record are ' ..
      'registering: Redis lost its data, or a new deployment): publishing from epoch ' .. (c + 2)
  end
  return nil
end

-- Whether ``epoch`` was published already: by a leader before us (NS:trader 'published'; only
-- this epoch counts, anything beyond it can only be garbage), or by this trader itself, which
-- remembers its last publication (`last`: Redis may have lost the record since).
local function published_already(trader, epoch, last)
  return int(redis.call('HGET', trader, 'published') or '') == epoch or (tonumber(last) or -1) >= epoch
end

-- Keep the registry, its backup and the deregistration records consistent (O(1) unless something
-- changed).  Runs only in the trader's scripts and in `redismedian deregister`: a name leaves the
-- registry only by deregistration, and every deregistration leaves a record (NS:deregistered:
-- name -> server ms):
-- * a registry that is not a set is garbage: overwritten with the backup; a backup or a record
--   hash that is not what it should be is replaced too;
-- * a registry that vanished while the backup lists two or more names was lost (DEL, eviction,
--   expiry): restored from the backup.  SREM of the last name deletes the key too, and Redis
--   cannot tell that from DEL: a vanished registry whose backup lists one name is taken as that
--   name's deregistration (recorded), whoever looks first and whatever it remembers; unless the
--   deployment record lost its registry version (registry_field): then Redis lost its data under
--   the backup, and the name is restored;
-- * a registry that exists is authoritative: when its size differs from the backup's, names were
--   SREMed (deregistered: recorded) or SADDed by hand, and the backup becomes a copy of it.
-- Returns version, backup size, note ('' unless something was repaired).
local function registry_guard(meta, reg, backup, dereg, now)
  local note = ''
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
  end
  local nb = redis.call('SCARD', backup)
  if rt == 'none' and nb > 0 then
    local marked = registry_field(meta) ~= nil
    if nb > 1 or not marked then
      redis.call('SUNIONSTORE', reg, backup)
      note = note .. reg .. ' had vanished: restored ' .. nb .. ' registrations from ' .. backup
      if not marked then
        registry_bump(meta)     -- the mark again: a later SREM of the last name is a deregistration
        note = note .. ' (' .. meta .. ' had lost the registry version: Redis lost data)'
      end
    else
      local last = redis.call('SRANDMEMBER', backup)
      redis.call('HSET', dereg, last, now)
      redis.call('SREM', backup, last)
      nb = 0
      registry_bump(meta)
    end
  elseif rt ~= 'none' and redis.call('SCARD', reg) ~= nb then
    for _, gone in ipairs(redis.call('SDIFF', backup, reg)) do
      redis.call('HSET', dereg, gone, now)
    end
    redis.call('SUNIONSTORE', backup, reg)
    nb = redis.call('SCARD', backup)
    registry_bump(meta)
  end
  return registry_version(meta), nb, note
end
"""


def sha1(source: str) -> str:
    """The name Redis gives a script (``EVALSHA``, ``SCRIPT LOAD``'s reply, the ACL's ``+evalsha|<sha1>``)."""
    return hashlib.sha1(source.encode()).hexdigest()


def _text(x: Any) -> Any:
    return x.decode(errors="replace") if isinstance(x, bytes) else x


def _fields(raw: Sequence[Any], n: int, default: Any = "") -> list[Any]:
    """The first ``n`` items of a reply as text, padded with ``default`` (shorter replies of the
    same script leave the later fields out)."""
    out = [_text(x) for x in list(raw)[:n]]
    return out + [default] * (n - len(out))


class Preamble(NamedTuple):
    """What every deployment-aware script's reply starts with: a status word, the server time, and
    a detail (the deployment instance, or for a refusal what is wrong: ``period`` -> the
    deployment's period, ``lease`` -> the holder, ``wrongtype``/``baddata`` -> why, ``nometa``)."""

    status: str
    now: int
    detail: str


REFUSALS = ("period", "lease", "wrongtype", "baddata", "nometa")   # a Preamble's statuses whose detail says why


def preamble(raw: Any) -> Preamble | None:
    """The common start of a reply, or None for replies that have none (leases, deregister).
    ``now`` is 0 in the reply of a strategy report that did not check the deployment record."""
    if not isinstance(raw, list) or len(raw) < 2 or not isinstance(raw[0], (bytes, str)):
        return None
    status, now, detail = _fields(raw, 3, "")
    detail = str(detail or "")
    if status in REFUSALS:    # why, quoting data (a lease holder, a garbage period): escaped, bounded
        detail = shown(detail, LONG)
    return Preamble(status, int(now), detail)


# ---------------------------------------------------------------------------------------------
# Leases
# ---------------------------------------------------------------------------------------------

LEASE_ACQUIRE = PRELUDE + r"""
local cur = lease_get(KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1}
end
return {0, cur, redis.call('PTTL', KEYS[1])}
"""


class LeaseAcquired(NamedTuple):
    ours: bool
    holder: str
    pttl_ms: int


def lease_acquire(run: Runner, key: str, *, owner: str, ttl_ms: int) -> LeaseAcquired:
    raw = run(LEASE_ACQUIRE, [key], [owner, ttl_ms])
    ours, holder, pttl = _fields(raw, 3, None)
    # The holder is what the lease key holds: data (escaped, bounded), shown in messages only.
    return LeaseAcquired(int(ours) == 1, shown(holder or ""), int(pttl) if pttl is not None else 0)


LEASE_RELEASE = r"""
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def lease_release(run: Runner, key: str, *, owner: str) -> bool:
    return int(run(LEASE_RELEASE, [key], [owner])) == 1


# ---------------------------------------------------------------------------------------------
# The deployment record
# ---------------------------------------------------------------------------------------------

class MetaArgs(NamedTuple):
    """What every deployment-aware script is told about the caller."""

    period_ms: int
    known_instance: str     # the instance id the caller saw last ('' at start)
    fresh_instance: str     # a new id, used only if the script creates the record
    owner: str              # the caller's lease value
    lease_ttl_ms: int


META_CREATE = PRELUDE + r"""
local now = now_ms()
local inst, changed, detail = meta_check(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now, true)
if not inst then return {changed, now, detail} end
return {'ok', now, inst}
"""


def meta_create(run: Runner, k: Keys, m: MetaArgs) -> None:
    """Create the deployment record when it is missing (refused by the ACL to every user but the
    trader and the operator).  The common reply checks happen in ``run``."""
    run(META_CREATE, [k.meta], [m.period_ms, m.known_instance, m.fresh_instance])


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------

GENERATOR_PUBLISH = PRELUDE + r"""
local now = now_ms()
local period = tonumber(ARGV[1])
local inst, changed, detail = meta_check(KEYS[1], ARGV[1], ARGV[2], '', now, false)
if not inst then return {changed, now, detail} end
local held, holder = lease_hold(KEYS[4], ARGV[4], ARGV[5])
if not held then return {'lease', now, holder} end
local epoch = tonumber(ARGV[6])
local cur = epoch_of(now, period)
if cur < epoch then return {'early', now, inst, 0, '', cur} end
if cur > epoch then return {'late', now, inst, 0, '', cur} end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'value', ARGV[8], 'epoch', ARGV[6], 'ts', now, 'status', ARGV[9])
if ARGV[10] ~= '' then redis.call('HSET', KEYS[2], 'error', ARGV[10]) end
redis.call('PEXPIRE', KEYS[2], ARGV[11])
local repaired = ''
local bad = wrongtype(KEYS[3], 'stream')
if bad then redis.call('DEL', KEYS[3]); repaired = KEYS[3] .. ' was a ' .. bad end
-- Capped whoever calls: a feed trimmed to at most 100,000 entries whatever ARGV[12] says, and every
-- publication trims what anybody XADDed to the feed since.
local maxlen = math.min(tonumber(ARGV[12]) or 1000, 100000)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'name', ARGV[7], 'epoch', ARGV[6],
           'value', ARGV[8], 'status', ARGV[9], 'error', ARGV[10], 'ts', now)
return {'ok', now, inst, changed and 1 or 0, repaired, cur}
"""


class GeneratorPublished(NamedTuple):
    status: str          # ok | early (server clock not there yet) | late (epoch over)
    now: int
    instance: str
    changed: bool
    repaired: str        # a feed key that was overwritten by somebody else and replaced
    server_epoch: int


def generator_publish(run: Runner, k: Keys, m: MetaArgs, *, name: str, epoch: int, value: str, status: str,
                      error: str, signal_ttl_ms: int, feed_maxlen: int) -> GeneratorPublished:
    raw = run(GENERATOR_PUBLISH, [k.meta, k.signal(name), k.signal_feed(name), k.lease("generator", name)],
              [*m, epoch, name, value, status, error, signal_ttl_ms, feed_maxlen])
    s, now, inst, changed, repaired, cur = _fields(raw, 6, 0)
    return GeneratorPublished(s, int(now), inst, bool(int(changed)), repaired or "", int(cur))


# ---------------------------------------------------------------------------------------------
# Strategy
# ---------------------------------------------------------------------------------------------

# The doorbell, in the full report and in the fast path's small script: count a registered name's
# submission for the epoch, and ring when the count reaches the registry's size (a hint for the
# trader: it can make it look early or late, never publish anything else).  The ring is a message
# on a pub/sub channel holding the epoch's number: it stores nothing (a list did, and a strategy's
# credentials could fill it).  Returns nothing.
RING = r"""
local function count_and_ring(registry, count, channel, epoch, ttl)
  local c = redis.pcall('INCR', count)
  if c == 1 then redis.call('PEXPIRE', count, ttl) end
  if c == redis.call('SCARD', registry) then redis.call('PUBLISH', channel, epoch) end
end
"""

# A strategy's full report: at start-up, while it is not registered, and whenever the fast path
# (below) found something unexpected.  The deployment record is checked (TIME and HMGET) only when
# the caller asks (ARGV[14]: at start-up, after a problem, and every few periods); a decision for
# an epoch that is over is refused by the caller's clock and, whatever gets through, by the trader,
# which reads only "<its epoch>|..." values.
STRATEGY_REPORT = PRELUDE + RING + r"""
local now, inst, changed = 0, '', false
if ARGV[14] == '1' then
  now = now_ms()
  local i, c, detail = meta_check(KEYS[1], ARGV[1], ARGV[2], '', now, false)
  if not i then return {c, now, detail} end
  inst, changed = i, c
end
local held, holder = lease_hold(KEYS[2], ARGV[4], ARGV[5])
if not held then return {'lease', now, holder} end
local name, value, reason = ARGV[7], ARGV[8], ARGV[10]
redis.call('SET', KEYS[3], ARGV[9], 'PX', ARGV[11])     -- the decision's text (report_text)
local submitted = (value ~= '') and 1 or 0
local registered = redis.pcall('SISMEMBER', KEYS[4], name)
if registered == 1 then
  if submitted == 1 and ARGV[15] ~= '1' then   -- ARGV[15]: the fast path that came first counted it
    count_and_ring(KEYS[4], KEYS[6], ARGV[16], ARGV[6], ARGV[12])
  end
  return {'ok', now, inst, changed and 1 or 0, 1, submitted, reason}
end
-- Not registered: deregistered (a record newer than this process), or waiting for the trader.
local rec = redis.pcall('HGET', KEYS[5], name)
if type(rec) == 'string' then
  local t = int(rec)
  if t and t >= tonumber(ARGV[13]) then return {'deregistered', now, inst, changed and 1 or 0, 0, 0, rec} end
end
redis.call('PUBLISH', ARGV[17], name)   -- the trader admits it (or not) at its next tick
return {'ok', now, inst, changed and 1 or 0, 0, submitted, reason}
"""


# The fast path of a report, for a strategy that is registered (nearly every report): plain
# commands in one pipeline, and the doorbell as the one small script among them.  A command inside
# a script costs Redis about twice what the same command costs on its own (measured in the
# benchmarks), and a report need not be atomic except where it counts: the doorbell (registered?
# count, ring when the count reaches the registry's size) is one script; the lease is read back in
# the same round trip.  Anything unexpected in the replies (the lease not ours, the name not in the
# registry, a deployment record that changed, a key of the wrong type, a refusal) sends the strategy
# to the full STRATEGY_REPORT at once, which judges and repairs it as always: a process that lost
# its name stops at that report.  What the fast path gives up against the script: a process that
# stalled past its lease, and whose name another process took meanwhile, writes one decision before
# it finds out (docs/guarantees.md); the trader counts a decision only for its own epoch.
STRATEGY_DOORBELL = RING + r"""
if redis.pcall('SISMEMBER', KEYS[1], ARGV[1]) ~= 1 then return 0 end
if ARGV[2] ~= '1' then return 1 end
count_and_ring(KEYS[1], KEYS[2], ARGV[4], ARGV[5], ARGV[3])
return 2
"""
STRATEGY_DOORBELL_SHA = sha1(STRATEGY_DOORBELL)


def report_text(epoch: int, value: str, state: str, reason: str) -> str:
    """A decision key's value: ``<epoch>|<value>``, or ``<epoch>|!<state>|<reason>`` without a decision
    (written by the fast path and by STRATEGY_REPORT; ``parse_report`` reads it)."""
    return f"{epoch}|{value}" if value else f"{epoch}|!{state}|{reason[:REASON_LIMIT]}"


class TickRequest(NamedTuple):
    """The commands of one fast report, and what their replies must say."""

    commands: list[tuple[Any, ...]]
    check_meta: bool
    submitted: bool


def strategy_tick_request(k: Keys, m: MetaArgs, *, name: str, epoch: int, value: str, state: str, reason: str,
                          decision_ttl_ms: int, ready_ttl_ms: int, check_meta: bool) -> TickRequest:
    """The commands of a fast report, one pipeline (the benchmarks' load generator sends the same)."""
    lease = k.lease("strategy", name)
    cmds: list[tuple[Any, ...]] = [("TIME",), ("HMGET", k.meta, "period_ms", "instance")] if check_meta else []
    # PEXPIRE ... XX: a lease that never expires is no live holder's (garbage, taken back by the full
    # report); the fast path must not turn it into one that looks alive.
    cmds += [("GET", lease), ("PEXPIRE", lease, m.lease_ttl_ms, "XX"),
             ("SET", k.decision(name), report_text(epoch, value, state, reason), "PX", decision_ttl_ms),
             ("EVALSHA", STRATEGY_DOORBELL_SHA, 2, k.strategies, k.count(epoch),
              name, "1" if value else "0", ready_ttl_ms, k.ready_channel, epoch)]
    return TickRequest(cmds, check_meta, bool(value))


class StrategyTicked(NamedTuple):
    ok: bool             # every reply as expected: the report is done (else make the full report)
    why: str             # what was not as expected
    now: int             # server ms (0 unless the deployment record was checked)
    counted: bool        # the doorbell counted this submission (the full report must not count again)
    noscript: bool       # Redis did not know the doorbell script (load it)


def strategy_ticked(req: TickRequest, replies: Sequence[Any], m: MetaArgs) -> StrategyTicked:
    """Judge the replies of a fast report (pure)."""
    r = list(replies)
    now = 0
    why = ""
    if req.check_meta:
        t, meta = r[0], r[1]
        r = r[2:]
        if isinstance(t, (list, tuple)) and len(t) == 2:
            now = int(t[0]) * 1000 + int(t[1]) // 1000
        if not isinstance(meta, (list, tuple)) or [_text(x) for x in meta] != [str(m.period_ms), m.known_instance]:
            why = "the deployment record is not the one this strategy knows"
    got, renewed, written, bell = r[:4]
    noscript = isinstance(bell, Exception) and (isinstance(bell, NoScriptError) or "NOSCRIPT" in str(bell))
    if _text(got) != m.owner:
        why = why or "the lease is not ours"
    elif noscript:
        why = why or "the doorbell script is not loaded"
    elif bell == 0:
        why = why or "not in the registry"
    elif bell not in (1, 2) or isinstance(renewed, Exception) or isinstance(written, Exception):
        why = why or "a command was refused"
    return StrategyTicked(not why, why, now, bell == 2, noscript)


class StrategyReported(NamedTuple):
    status: str          # ok | deregistered
    now: int             # server ms (0 when the deployment record was not checked)
    instance: str
    changed: bool        # the deployment record is not the one this strategy saw last
    registered: bool     # the name is in the registry (else it asked the trader to admit it)
    submitted: bool      # a decision was written for the epoch
    reason: str          # why not (when not submitted), or the deregistration time


class Report(NamedTuple):
    """A strategy's decision key as read back (``status``, ``check``, the trader's reasons)."""

    epoch: int | None     # None: not <epoch>|... (garbage)
    state: str            # ok (a decision) | starting | error | garbage
    value: str            # the decision's text (state ok)
    reason: str


def parse_report(raw: Any) -> Report | None:
    """Read ``<epoch>|<value>`` or ``<epoch>|!<state>|<reason>`` (what STRATEGY_REPORT writes);
    None for a missing key.  Never raises: garbage comes back as state ``garbage``."""
    from .common import as_str, parse_int
    if raw is None:
        return None
    if len(raw) > DECISION_MAX_BYTES:
        return Report(None, "garbage", "", f"holds more than {DECISION_MAX_BYTES} bytes: not a report")
    text = as_str(raw)
    e_text, sep, rest = text.partition("|")
    epoch = parse_int(e_text)
    if not sep or epoch is None:
        return Report(None, "garbage", "", f"holds {quoted(text, 60)}, not <epoch>|<decision>")
    if rest.startswith("!"):
        # What the strategy says is data: its state and reason come back escaped and bounded, so
        # that the trader's reason, its log and status show them on one line (redismedian.text).
        state, _, reason = rest[1:].partition("|")
        return Report(epoch, shown(state, 40) or "error", "", shown(reason))
    return Report(epoch, "ok", rest, "")


def strategy_report_request(k: Keys, m: MetaArgs, *, name: str, epoch: int, value: str, state: str, reason: str,
                            decision_ttl_ms: int, ready_ttl_ms: int, start_ms: int,
                            check_meta: bool = True, counted: bool = False) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of one report (the benchmarks' load generator sends it in pipelines)."""
    keys = [k.meta, k.lease("strategy", name), k.decision(name), k.strategies, k.deregistered, k.count(epoch)]
    # ARGV[6], the epoch, is what the doorbell rings with; the channels are not keys (ARGV 16 and 17).
    args = [*m, epoch, name, value, report_text(epoch, value, state, reason), reason[:REASON_LIMIT],
            decision_ttl_ms, ready_ttl_ms, start_ms, "1" if check_meta else "0", "1" if counted else "0",
            k.ready_channel, k.joins_channel]
    return keys, args


def strategy_reported(raw: Sequence[Any]) -> StrategyReported:
    s, now, inst, changed, registered, submitted, reason = _fields(raw, 7, 0)
    return StrategyReported(s, int(now), inst, bool(int(changed)), bool(int(registered)), bool(int(submitted)),
                            str(reason or ""))


def strategy_report(run: Runner, k: Keys, m: MetaArgs, **kw: Any) -> StrategyReported:
    keys, args = strategy_report_request(k, m, **kw)
    return strategy_reported(run(STRATEGY_REPORT, keys, args))


# ---------------------------------------------------------------------------------------------
# Trader
# ---------------------------------------------------------------------------------------------

class TraderArgs(NamedTuple):
    """What the trader remembers, sent with each of its scripts."""

    token: str              # fencing token while leading, '' while standing by
    memory_instance: str    # deployment instance of the registry it remembers ('' = none)
    memory_version: int
    memory_size: int
    fence_floor: int        # highest fencing token it has seen
    last_published: int     # last epoch it published itself (-1 = none)
    restored_instance: str  # deployment instance into which it restored every registration it knew


# KEYS: meta, registry, backup, deregistered, trader, lease, fence, traders, settled, acks
# ARGV: MetaArgs..., 6 epoch, TraderArgs 7..13, 14 heartbeat ttl, 15 NS:trader ttl, 16 the last epoch
#       whose median this trader saw acknowledged ('' = none), 17 the stream ID to look for it from
# (Registration requests come on the NS:joins channel, not through this script: Trader.admit.)
TRADER_TICK = PRELUDE + r"""
local now = now_ms()
local period = tonumber(ARGV[1])
local inst, changed, detail = meta_check(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now, true)
if not inst then return {changed, now, detail} end
local ver, nb, note = registry_guard(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now)
local epoch = tonumber(ARGV[6])
local owner = ARGV[4]
local prev = ''     -- the last epoch a trader settled (NS:trader:settled)
-- Does this master still hold the acknowledgement of the last median this trader saw acknowledged?
-- ('held'; 'lost': a failover promoted a replica without it, TRADER_RESTORE; '' not asked.)  Replication
-- keeps a master's writes in order, so a node holding that one holds every one before it.
local held_acked = ''
if ARGV[16] ~= '' then
  held_acked = 'lost'
  if redis.call('TYPE', KEYS[10])['ok'] == 'stream' then
    for _, row in ipairs(redis.call('XRANGE', KEYS[10], ARGV[17], '+', 'COUNT', 100)) do
      if field(row[2], 'epoch') == ARGV[16] then held_acked = 'held' end
    end
  end
end
local function reply(status, token, took, detail)
  return {status, now, inst, token or '', took or 0, detail or '', ver, nb, note, prev, held_acked}
end

-- Never lead or publish over a registry that changed since this trader last looked at it: it
-- first checks that every name that left was deregistered, and restores the others.
if ARGV[8] ~= '' and (inst ~= ARGV[8] or ver ~= tonumber(ARGV[9]) or nb ~= tonumber(ARGV[10])) then
  return reply('registry')
end

-- Heartbeats: every trader lists itself; stale or garbage entries are dropped.
local hb_ttl = tonumber(ARGV[14])
if wrongtype(KEYS[8], 'hash') then redis.call('DEL', KEYS[8]) end
local function heartbeat(role, extra)
  redis.call('HSET', KEYS[8], owner, role .. '|' .. now .. '|' .. extra)
  redis.call('PEXPIRE', KEYS[8], hb_ttl)
end

-- Leadership, fenced: the lease holds "owner|token"; a new leader increments the token.
local lease = lease_get(KEYS[6])
local token = ARGV[7]
local took = 0
if not lease and token ~= '' and redis.pcall('GET', KEYS[7]) == token then
  -- Our lease ran out (a stall) and nobody took it since: the fence counter still holds our token
  -- (a new leader increments it), so we lead on with the same token.
  redis.call('SET', KEYS[6], owner .. '|' .. token, 'PX', ARGV[5])
elseif not lease then
  if wrongtype(KEYS[7], 'string') then redis.call('DEL', KEYS[7]) end
  local f = redis.call('GET', KEYS[7])
  -- A counter is what INCR takes and what a trader writes: digits, no sign, no leading zero
  -- ('+5' and '007' would make INCR fail, '-3' would hand out tokens below the last one).
  if f and not ((f == '0' or string.find(f, '^[1-9]%d*$')) and #f <= 15) then
    -- Not a counter (INCR would fail, and no trader could ever lead): go on from the last
    -- token the trader record shows, so that tokens still only grow.
    local last = 0
    if redis.call('TYPE', KEYS[5])['ok'] == 'hash' then last = int(redis.call('HGET', KEYS[5], 'fence') or '') or 0 end
    redis.call('SET', KEYS[7], last)
  end
  local t = redis.call('INCR', KEYS[7])
  -- Above every token this trader has seen, too: tokens only grow, even after Redis lost the counter.
  local floor = tonumber(ARGV[11]) or 0
  if t <= floor then
    t = floor + 1
    redis.call('SET', KEYS[7], t)
  end
  token = tostring(t)
  redis.call('SET', KEYS[6], owner .. '|' .. token, 'PX', ARGV[5])
  took = 1
elseif lease ~= owner .. '|' .. token then
  heartbeat('standby', lease)
  return reply('standby', '', 0, lease .. '|' .. redis.call('PTTL', KEYS[6]))
else
  redis.call('PEXPIRE', KEYS[6], ARGV[5])
end
heartbeat('leader', token)
local hb = redis.call('HGETALL', KEYS[8])   -- a handful of traders
for i = 1, #hb, 2 do
  local ts = int(string.match(hb[i + 1], '^%a+|(%d+)|') or '')
  if not ts or ts < now - hb_ttl then redis.call('HDEL', KEYS[8], hb[i]) end
end

if wrongtype(KEYS[5], 'hash') then redis.call('DEL', KEYS[5]) end
local p = redis.pcall('GET', KEYS[9])
if type(p) == 'string' then prev = p end
local cur = epoch_of(now, period)
if cur ~= epoch then return reply('expired', token, took, tostring(cur)) end
if took == 1 then
  redis.call('HSET', KEYS[5], 'state', 'starting', 'reason', 'a trader took the lead in epoch ' .. epoch,
             'epoch', epoch, 'ts', now, 'fence', token, 'leader', owner)
  redis.call('HDEL', KEYS[5], 'median', 'count')
  redis.call('PEXPIRE', KEYS[5], ARGV[15])
end
if published_already(KEYS[5], epoch, ARGV[12]) then return reply('done', token, took) end

local why = regrowing(KEYS[1], period, epoch, inst, ARGV[13])
if why then
  redis.call('HSET', KEYS[5], 'state', 'starting', 'reason', why, 'epoch', epoch, 'ts', now, 'fence', token,
             'leader', owner)
  redis.call('HDEL', KEYS[5], 'median', 'count')
  redis.call('PEXPIRE', KEYS[5], ARGV[15])
  redis.call('SET', KEYS[9], epoch)
  return reply('starting', token, took, why)
end
return reply('lead', token, took, '')
"""


class TraderTicked(NamedTuple):
    """``registry``: the registry is not the one this trader remembers; ``standby``: another
    trader leads (``detail`` = its lease value and pttl); ``expired``: the epoch is over (``detail``
    = the server's epoch); ``done``: published already; ``starting``: a grace epoch (``detail`` =
    why); ``lead``: go on and collect the decisions."""

    status: str
    now: int
    instance: str
    token: str
    took: bool
    detail: str
    version: int
    backup_size: int
    note: str
    prev: int | None     # the last epoch a trader settled (NS:trader:settled), None when there is none
    # The acknowledgement of the median ``acked`` (trader_tick's argument) is missing on this master:
    # a failover promoted a replica that did not hold it (the trader writes it back, trader_restore).
    lost_acked: bool = False


def trader_tick(run: Runner, k: Keys, m: MetaArgs, t: TraderArgs, *, epoch: int, heartbeat_ttl_ms: int,
                state_ttl_ms: int, acked: tuple[int, int] | None = None) -> TraderTicked:
    """``acked``: (the last epoch whose median this trader saw acknowledged, the stream ID ms from which
    its NS:acks entry can be), to learn whether this master still holds it."""
    from .common import parse_int
    raw = run(TRADER_TICK, [k.meta, k.strategies, k.registry_backup, k.deregistered, k.trader,
                            k.lease("trader"), k.trader_fence, k.traders, k.settled, k.acks],
              [*m, epoch, *t, heartbeat_ttl_ms, state_ttl_ms, *(acked if acked else ("", ""))])
    s, now, inst, token, took, detail, ver, nb, note, prev, held = _fields(raw, 11, 0)
    return TraderTicked(s, int(now), inst, str(token), bool(int(took)), str(detail), int(ver), int(nb), str(note),
                        parse_int(prev), str(held) == "lost")


# KEYS: meta, registry, backup, deregistered, trader, medians, lease, count(epoch), events, settled,
#       fence, then the other slots' doorbell counters (cleared)
# ARGV: MetaArgs..., 6 epoch, TraderArgs 7..13, 14 outcome (ok/error/idle), 15 median or reason,
#       16 count, 17 members, 18 medians maxlen, 19 NS:trader ttl, 20 missed count, 21 last missed
#       epoch, 22 its reason, 23 replicas reason ('' = none: a median makes the state ok; else the
#       state stays error with it until the median is acknowledged, see TRADER_ACKED), 24 inputs
#       ('' = not recorded), then missed ranges not yet recorded: (first, last, reason) triples
TRADER_SETTLE = PRELUDE + r"""
local now = now_ms()
local period = tonumber(ARGV[1])
local inst, changed, detail = meta_check(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now, false)
if not inst then return {changed, now, detail} end
if changed then return {'registry', now, inst, 'Redis lost its data'} end
local ver, nb, note = registry_guard(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now)
local epoch = tonumber(ARGV[6])
local token, owner = ARGV[7], ARGV[4]
-- The decisions were read for exactly the registry the trader remembers: refuse if it moved.
if ver ~= tonumber(ARGV[9]) or nb ~= tonumber(ARGV[10]) or redis.call('SCARD', KEYS[2]) ~= nb then
  return {'registry', now, inst, note}
end
local held = lease_get(KEYS[7])
if held ~= owner .. '|' .. token then
  -- Our lease ran out while we read (a stall: a huge value, a paused process) and nobody took it:
  -- the fence counter still holds our token (every new leader increments it), so nobody led
  -- meanwhile, and we take it back with the same token instead of giving up the epoch.
  if held or token == '' or redis.pcall('GET', KEYS[11]) ~= token then return {'standby', now, inst, note} end
  redis.call('SET', KEYS[7], owner .. '|' .. token, 'PX', ARGV[5])
end
if epoch_of(now, period) ~= epoch then return {'expired', now, inst, note} end
if wrongtype(KEYS[5], 'hash') then redis.call('DEL', KEYS[5]) end
if published_already(KEYS[5], epoch, ARGV[12]) then return {'done', now, inst, note} end
local outcome, text = ARGV[14], ARGV[15]
if outcome == 'ok' then
  local why = regrowing(KEYS[1], period, epoch, inst, ARGV[13])
  if why then outcome, text = 'starting', why end
end
-- Epochs no trader settled (a stall, an outage, a takeover), recorded once: NS:events and NS:trader.
if wrongtype(KEYS[9], 'stream') then redis.call('DEL', KEYS[9]) end
for i = 25, #ARGV, 3 do
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[18], '*', 'status', 'missed', 'epoch', ARGV[i],
             'last', ARGV[i + 1], 'reason', ARGV[i + 2], 'fence', token, 'ts', now)
end
if ARGV[20] ~= '0' then
  redis.call('HSET', KEYS[5], 'missed', ARGV[20], 'last_missed', ARGV[21], 'last_missed_reason', ARGV[22])
end
local status = outcome
if outcome == 'ok' then
  if wrongtype(KEYS[6], 'stream') then redis.call('DEL', KEYS[6]) end
  local entry = {'epoch', epoch, 'median', ARGV[15], 'count', ARGV[16], 'members', ARGV[17], 'fence', token,
                 'ts', now}
  if ARGV[24] ~= '' then entry[#entry + 1] = 'inputs'; entry[#entry + 1] = ARGV[24] end
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[18], '*', unpack(entry))
  local state, reason = 'ok', ''
  if ARGV[23] ~= '' then state, reason = 'error', ARGV[23] end
  redis.call('HSET', KEYS[5], 'state', state, 'reason', reason, 'epoch', epoch, 'median', ARGV[15],
             'count', ARGV[16], 'ts', now, 'fence', token, 'leader', owner, 'published', epoch)
  redis.call('DEL', KEYS[8])
  status, text = 'published', ''
else
  redis.call('HSET', KEYS[5], 'state', outcome, 'reason', text, 'epoch', epoch, 'ts', now,
             'fence', token, 'leader', owner)
  redis.call('HDEL', KEYS[5], 'median', 'count')
  if outcome == 'error' then
    redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[18], '*', 'status', 'error', 'epoch', epoch,
               'reason', text, 'fence', token, 'ts', now)
  end
end
-- A reader never takes a gone trader's state for a live one: it vanishes 3 periods after our last write.
redis.call('PEXPIRE', KEYS[5], ARGV[19])
redis.call('SET', KEYS[10], epoch)
-- The doorbells of the other slots (keys.other_doorbells): whatever anybody wrote there is gone.
for i = 12, #KEYS do redis.call('DEL', KEYS[i]) end
return {status, now, inst, note, text}
"""


class TraderSettled(NamedTuple):
    """``published``, ``error``, ``idle`` or ``starting`` (written), or refused: ``registry`` (it
    moved since the decisions were read), ``standby`` (the lead is lost), ``expired``, ``done``."""

    status: str
    now: int
    instance: str
    note: str
    reason: str          # what was written as the reason (``starting``: why nothing was published)


class Missed(NamedTuple):
    """Epochs ``first`` to ``last`` that no trader settled, and why."""

    first: int
    last: int
    reason: str


class MissedRecord(NamedTuple):
    """What a trader tells of the epochs it missed: the count since it started, the last one and why,
    and the ranges not yet written to NS:events."""

    total: int = 0       # not `count`: that would hide tuple.count
    last: int = -1
    reason: str = ""
    pending: tuple[Missed, ...] = ()


def trader_settle(run: Runner, k: Keys, m: MetaArgs, t: TraderArgs, *, epoch: int, outcome: str, text: str,
                  count: int = 0, members: str = "", medians_maxlen: int, state_ttl_ms: int,
                  missed: MissedRecord = MissedRecord(), replicas_reason: str = "",
                  inputs: str = "") -> TraderSettled:
    # Every text this writes into NS:trader and NS:events is escaped and bounded here, whatever the
    # caller built it from: every reader of those keys gets one inert line (redismedian.text).
    if outcome != "ok":
        text = shown(text, LONG)
    ranges = [x for r in missed.pending for x in (r.first, r.last, shown(r.reason, 500))]
    raw = run(TRADER_SETTLE, [k.meta, k.strategies, k.registry_backup, k.deregistered, k.trader, k.medians,
                              k.lease("trader"), k.count(epoch), k.events, k.settled, k.trader_fence,
                              *k.other_doorbells(epoch)],
              [*m, epoch, *t, outcome, text, count, members, medians_maxlen, state_ttl_ms,
               missed.total, missed.last, shown(missed.reason, 500), shown(replicas_reason, LONG), inputs,
               *ranges])
    s, now, inst, note, reason = _fields(raw, 5, "")
    return TraderSettled(s, int(now), inst, str(note or ""), str(reason or ""))


# KEYS: lease, trader, events, acks   ARGV: owner|token, fence token, epoch, replicas that acknowledged,
#       reason ('' = enough of them), stream maxlen, NS:trader ttl, the master's AOF fsync ('' = WAIT;
#       under WAITAOF, --wait-aof: 1 or 0)
# After WAIT (--min-replicas N) or WAITAOF (--wait-aof): record whether the epoch's median counts as
# published downstream.  Acknowledged: an NS:acks entry (with ``aof`` under WAITAOF), and the state ok
# again when the median of this very epoch is what NS:trader shows.  Not acknowledged: an
# ``unacknowledged`` gap in NS:events, and state error.
TRADER_ACKED = PRELUDE + r"""
if lease_get(KEYS[1]) ~= ARGV[1] then return 0 end
local now = now_ms()
if ARGV[5] == '' then
  if wrongtype(KEYS[4], 'stream') then redis.call('DEL', KEYS[4]) end
  local entry = {'XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'epoch', ARGV[3], 'replicas', ARGV[4]}
  if ARGV[8] ~= '' then
    entry[#entry + 1] = 'aof'
    entry[#entry + 1] = ARGV[8]
  end
  for _, v in ipairs({'fence', ARGV[2], 'ts', now}) do entry[#entry + 1] = v end
  redis.call(unpack(entry))
  if redis.call('TYPE', KEYS[2])['ok'] == 'hash' and redis.call('HGET', KEYS[2], 'published') == ARGV[3] then
    redis.call('HSET', KEYS[2], 'state', 'ok', 'reason', '', 'acked', ARGV[3])
    redis.call('PEXPIRE', KEYS[2], ARGV[7])
  end
else
  if wrongtype(KEYS[3], 'stream') then redis.call('DEL', KEYS[3]) end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'status', 'unacknowledged', 'epoch', ARGV[3],
             'reason', ARGV[5], 'fence', ARGV[2], 'ts', now)
  if wrongtype(KEYS[2], 'hash') then redis.call('DEL', KEYS[2]) end
  redis.call('HSET', KEYS[2], 'state', 'error', 'reason', ARGV[5], 'epoch', ARGV[3], 'ts', now)
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
return now
"""


def trader_acked(run: Runner, k: Keys, *, lease_value: str, token: str, epoch: int, replicas: int, reason: str,
                 maxlen: int, state_ttl_ms: int, aof: int | None = None) -> int:
    """Record the replicas' verdict on ``epoch``'s median (``reason`` '' = acknowledged; ``aof``: None
    under WAIT, else whether the master's append-only file holds it, WAITAOF): the server time of the
    record (the ``ts`` of the NS:acks entry), or 0 when the lead is no longer ours (nothing written)."""
    raw = run(TRADER_ACKED, [k.lease("trader"), k.trader, k.events, k.acks],
              [lease_value, token, epoch, replicas, shown(reason, LONG), maxlen, state_ttl_ms,
               "" if aof is None else aof])
    return int(raw or 0)


# KEYS: medians, acks, events, acted, settled, trader
# ARGV: 1 streams' maxlen, 2 the last epoch this trader acted on ('' = none), 3 the stream ID from which
#       to look for the epochs, 4 the trader's current epoch (when it found them missing), then per
#       epoch (oldest first): epoch, n, the n fields of its NS:medians entry as the trader wrote it, m,
#       the m fields of its NS:acks entry
# A failover promoted a replica that did not hold the last medians this trader published and saw
# acknowledged (--min-replicas below the number of replicas, a second failover to a stale node): write
# each one back, as it was written, where this master lacks it (``restored`` = now), and the
# acknowledgement with it; record it in NS:events; NS:acted and NS:trader:settled not below them (so
# that no leader acts on one again or counts it as missed).  An epoch this master holds with another
# median is left as it is and recorded as a ``conflict``: never two medians for one epoch in the
# history.  Both are noted in NS:trader too, when it exists (``restored_first``/``restored_last``/
# ``restored_seen``, ``conflict_epoch``/``conflict_reason``/``conflict_seen``, the ``_seen`` ones the
# epoch in which it was found: what ``status`` shows and ``check`` judges).  Not fenced by the lead:
# it writes only what was published and acknowledged, and never over anything.
TRADER_RESTORE = PRELUDE + r"""
local now = now_ms()
for i = 1, 3 do
  if wrongtype(KEYS[i], 'stream') then redis.call('DEL', KEYS[i]) end
end
local function held(key)
  local seen = {}
  for _, row in ipairs(redis.call('XRANGE', key, ARGV[3], '+', 'COUNT', 10000)) do
    local e = field(row[2], 'epoch')
    if e and not seen[e] then seen[e] = field(row[2], 'median') or '' end
  end
  return seen
end
local medians, acks = held(KEYS[1]), held(KEYS[2])
local restored, conflicts = {}, {}
local i = 5
while i <= #ARGV do
  local epoch, nm = ARGV[i], tonumber(ARGV[i + 1])
  local mf = {unpack(ARGV, i + 2, i + 1 + nm)}
  local j = i + 2 + nm
  local na = tonumber(ARGV[j])
  local af = {unpack(ARGV, j + 1, j + na)}
  i = j + 1 + na
  local mine, there = field(mf, 'median'), medians[epoch]
  if there and there ~= mine then
    conflicts[#conflicts + 1] = epoch
    local why = 'acknowledged (and acted on) with median ' .. mine .. ' (fence ' .. (field(mf, 'fence') or '?') ..
                '), and this master holds median ' .. there .. ' for it'
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'status', 'conflict', 'epoch', epoch,
               'reason', why, 'ts', now)
    if redis.call('TYPE', KEYS[6])['ok'] == 'hash' then
      redis.call('HSET', KEYS[6], 'conflict_epoch', epoch, 'conflict_reason', why, 'conflict_seen', ARGV[4])
    end
  else
    local wrote = false
    if not there then
      mf[#mf + 1] = 'restored'; mf[#mf + 1] = now
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(mf))
      wrote = true
    end
    if not acks[epoch] then
      af[#af + 1] = 'restored'; af[#af + 1] = now
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(af))
      wrote = true
    end
    if wrote then restored[#restored + 1] = epoch end
  end
end
if #restored > 0 then
  local last = restored[#restored]
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'status', 'restored', 'epoch', restored[1], 'last', last,
             'reason', 'missing on this master after a failover; written back by the trader that published ' ..
             'them (' .. #restored .. ' acknowledged)', 'ts', now)
  if redis.call('TYPE', KEYS[6])['ok'] == 'hash' then
    redis.call('HSET', KEYS[6], 'restored_first', restored[1], 'restored_last', last, 'restored_seen', ARGV[4])
  end
  for _, kv in ipairs({{KEYS[4], ARGV[2]}, {KEYS[5], last}}) do
    if wrongtype(kv[1], 'string') then redis.call('DEL', kv[1]) end
    raise_to(kv[1], kv[2])
  end
end
return {restored, conflicts}
"""


class TraderRestored(NamedTuple):
    restored: list[int]     # epochs written back (median, acknowledgement or both)
    conflicts: list[int]    # epochs this master holds with another median (left as they are)


def trader_restore(run: Runner, k: Keys, *, entries: Sequence[tuple[int, Sequence[Any], Sequence[Any]]],
                   acted: int | None, from_ms: int, maxlen: int, epoch: int) -> TraderRestored:
    """Write back, where this master lacks them, the ``entries`` (epoch, NS:medians fields, NS:acks
    fields) this trader published and saw acknowledged; ``epoch``: the trader's current one."""
    args: list[Any] = [maxlen, "" if acted is None else acted, f"{from_ms}-0", epoch]
    for epoch, median_fields, ack_fields in entries:
        args += [epoch, len(median_fields), *median_fields, len(ack_fields), *ack_fields]
    raw = run(TRADER_RESTORE, [k.medians, k.acks, k.events, k.acted, k.settled, k.trader], args)
    restored, conflicts = _fields(raw, 2, [])
    return TraderRestored([int(x) for x in restored or []], [int(x) for x in conflicts or []])


# KEYS: lease, acted, trader   ARGV: owner|token, epoch acted on ('' = only check the lead),
#       action error ('' = none), NS:trader ttl
# The --on-median bookkeeping, fenced: only the leader records (and only forward).
TRADER_ACTED = PRELUDE + r"""
if lease_get(KEYS[1]) ~= ARGV[1] then return {0, ''} end
if ARGV[2] ~= '' then raise_to(KEYS[2], ARGV[2]) end
if redis.call('TYPE', KEYS[3])['ok'] == 'hash' then
  redis.call('HSET', KEYS[3], 'action_error', ARGV[3])
  if ARGV[2] ~= '' then redis.call('HSET', KEYS[3], 'acted', ARGV[2]) end
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
return {1, redis.call('GET', KEYS[2]) or ''}   -- no status word: no deployment checks on this reply
"""


class TraderActed(NamedTuple):
    leading: bool        # the lead (lease and token) is still ours
    acted: int | None    # the last epoch acted on, as recorded


def trader_acted(run: Runner, k: Keys, *, lease_value: str, epoch: int | None, error: str,
                 state_ttl_ms: int) -> TraderActed:
    """Record that the action ran for ``epoch`` (None: only check that we still lead) and its error."""
    from .common import parse_int
    raw = run(TRADER_ACTED, [k.lease("trader"), k.acted, k.trader],
              [lease_value, "" if epoch is None else epoch, shown(error, 500), state_ttl_ms])
    leading, acted = _fields(raw, 2, "")
    return TraderActed(int(leading) == 1, parse_int(acted))


# KEYS: meta, registry, backup, deregistered, then one strategy lease per name
# ARGV: MetaArgs..., then the names (in the order of their leases)
REGISTRY_ADMIT = PRELUDE + r"""
local now = now_ms()
local inst, changed, detail = meta_check(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now, false)
if not inst then return {changed, now, detail} end
local _, _, note = registry_guard(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now)
local admitted = {}
local created = int(redis.call('HGET', KEYS[1], 'created') or '')
local regrow = false
for i = 5, #KEYS do
  local name = ARGV[i + 1]
  local lease = lease_peek(KEYS[i])
  if lease and redis.call('SISMEMBER', KEYS[2], name) == 0 then
    -- The lease value is "<owner>|<server ms the process started>": a deregistration recorded
    -- after that start was meant for this very process, which is about to exit.
    local _, extra = lease_split(lease)
    local start = int(extra or '')
    local rec = int(redis.call('HGET', KEYS[4], name) or '')   -- garbage there is no record (cleared below)
    if start and not (rec and rec >= start) then
      redis.call('SADD', KEYS[2], name)
      redis.call('SADD', KEYS[3], name)
      redis.call('HDEL', KEYS[4], name)
      admitted[#admitted + 1] = name
      -- A process older than the deployment record: Redis lost its data under it.
      if created and start < created then regrow = true end
    end
  end
end
local ver = registry_version(KEYS[1])
if #admitted > 0 then ver = registry_bump(KEYS[1]) end
if regrow and not redis.call('HGET', KEYS[1], 'recreated') then redis.call('HSET', KEYS[1], 'recreated', now) end
local reply = {'ok', now, inst, ver, redis.call('SCARD', KEYS[3]), note}
for _, n in ipairs(admitted) do reply[#reply + 1] = n end
return reply
"""


class RegistryChanged(NamedTuple):
    status: str          # ok | changed (the deployment record is not the caller's)
    now: int
    instance: str
    version: int
    backup_size: int
    note: str            # a repair the registry guard made on the way
    names: tuple[str, ...]   # admitted or restored names


def registry_admit(run: Runner, k: Keys, m: MetaArgs, names: Sequence[str]) -> RegistryChanged:
    raw = run(REGISTRY_ADMIT, [k.meta, k.strategies, k.registry_backup, k.deregistered,
                               *(k.lease("strategy", n) for n in names)], [*m, *names])
    return _registry_changed(raw)


def _registry_changed(raw: Sequence[Any]) -> RegistryChanged:
    s, now, inst, ver, nb, note = _fields(raw, 6, 0)
    return RegistryChanged(s, int(now), inst, int(ver), int(nb), str(note or ""),
                           tuple(_text(x) for x in list(raw)[6:]))


# KEYS: meta, registry, registry backup, deregistration records
# ARGV: MetaArgs..., 6 registry version the caller remembers, 7.. names
# Adds the names back to the registry and its backup; the version moves past both the current and
# the remembered one.
REGISTRY_RESTORE = PRELUDE + r"""
local now = now_ms()
local inst, changed, detail = meta_check(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now, true)
if not inst then return {changed, now, detail} end
if changed then return {'changed', now, inst, 0, 0, ''} end
registry_guard(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now)
local shown = {}
for i = 7, #ARGV do
  redis.call('SADD', KEYS[3], ARGV[i])
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then shown[#shown + 1] = ARGV[i] end
end
local ver = math.max(registry_version(KEYS[1]), tonumber(ARGV[6]) or 0) + 1
redis.call('HSET', KEYS[1], 'registry', ver)
local reply = {'ok', now, inst, ver, redis.call('SCARD', KEYS[3]), ''}
for _, n in ipairs(shown) do reply[#reply + 1] = n end
return reply
"""


def registry_restore(run: Runner, k: Keys, m: MetaArgs, *, version: int, names: Sequence[str]) -> RegistryChanged:
    raw = run(REGISTRY_RESTORE, [k.meta, k.strategies, k.registry_backup, k.deregistered],
              [*m, version, *names])
    return _registry_changed(raw)


# ---------------------------------------------------------------------------------------------
# Operator
# ---------------------------------------------------------------------------------------------

# KEYS: meta, registry, registry backup, deregistration records   ARGV: name
# `redismedian deregister`: remove the name from the registry and its backup and record the
# deregistration (so that removing the last strategy is told apart from losing the registry).
DEREGISTER = PRELUDE + r"""
local now = now_ms()
local _, _, note = registry_guard(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now)
local removed = redis.call('SREM', KEYS[2], ARGV[1])
local removed_backup = redis.call('SREM', KEYS[3], ARGV[1])
if removed == 1 or removed_backup == 1 then
  redis.call('HSET', KEYS[4], ARGV[1], now)
  registry_bump(KEYS[1])
end
local reply = {removed, note}
if removed == 0 then
  for _, n in ipairs(redis.call('SRANDMEMBER', KEYS[2], 50)) do reply[#reply + 1] = n end
end
return reply
"""


class Deregistered(NamedTuple):
    removed: bool
    note: str            # a repair the registry guard made on the way
    registered: tuple[str, ...]  # when not removed: up to 50 registered names


def deregister(run: Runner, k: Keys, *, name: str) -> Deregistered:
    raw = run(DEREGISTER, [k.meta, k.strategies, k.registry_backup, k.deregistered], [name])
    removed, note = _fields(raw, 2, "")
    return Deregistered(bool(int(removed)), str(note or ""), tuple(_text(x) for x in list(raw)[2:]))


# Test support: the Lua number grammar, called on each argument (tests/unit/test_unit_numbers.py).
NUMBERS = PRELUDE + r"""
local out = {}
for i = 1, #ARGV do
  local x, n = num(ARGV[i]), int(ARGV[i])
  out[i] = {x and string.format('%.17g', x) or false, n and string.format('%.0f', n) or false}
end
return out
"""


# ---------------------------------------------------------------------------------------------
# Who runs what
# ---------------------------------------------------------------------------------------------

# The scripts each role runs, and no other: acl.py grants each role ``EVALSHA`` of exactly these
# (``+evalsha|<sha1>``), no ``EVAL`` and no ``FUNCTION``, so that no credential can make Redis run
# code of its own choosing (a looping script that wrote answers BUSY to everyone, and cannot be
# killed).  Loading (``SCRIPT LOAD``) runs nothing; only the trader and the operator may do it:
# after a Redis restart or a failover the first of them to meet NOSCRIPT loads every script here,
# and generators and strategies wait for that (Component.script).
ROLE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "generator": (LEASE_ACQUIRE, LEASE_RELEASE, GENERATOR_PUBLISH),
    "strategy": (LEASE_ACQUIRE, LEASE_RELEASE, STRATEGY_REPORT, STRATEGY_DOORBELL),
    "trader": (LEASE_ACQUIRE, LEASE_RELEASE, META_CREATE, TRADER_TICK, TRADER_SETTLE, TRADER_ACTED,
               TRADER_ACKED, TRADER_RESTORE, REGISTRY_ADMIT, REGISTRY_RESTORE),
    "operator": (DEREGISTER,),
}
# The roles that may load scripts (the ACL grants them SCRIPT LOAD; the others wait for them).
LOADERS = ("trader", "operator")
PRODUCTION_SCRIPTS: tuple[str, ...] = tuple(dict.fromkeys(s for v in ROLE_SCRIPTS.values() for s in v))


def load_scripts(client: Any, *extra: str) -> None:
    """``SCRIPT LOAD`` every production script (and ``extra``) in one round trip: whoever meets a
    Redis that lost its scripts loads them for every role.  Raises what Redis answers (NOPERM for a
    user that may not load)."""
    pipe = client.pipeline(transaction=False)
    for source in dict.fromkeys((*PRODUCTION_SCRIPTS, *extra)):
        pipe.script_load(source)
    pipe.execute()
