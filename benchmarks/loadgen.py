"""A load generator that does, for N simulated strategies, exactly what a strategy process does.

Each simulated strategy makes the same calls per period that
:meth:`redismedian.strategy.Strategy.report` makes: the fast path's plain commands while it is
registered (one pipeline, :func:`redismedian.scripts.strategy_tick_request`: the lease, the decision,
the small doorbell script, and the deployment record every ``META_CHECK_EVERY`` reports), and the full STRATEGY_REPORT script at its first report and while it is not
registered (:func:`redismedian.scripts.strategy_report_request`).  The commands are the same, and so
is the lease value the script holds (``"<owner>|<start ms>"``, as :meth:`Strategy.startup` sets it)
and its time to live.  Every simulated strategy has its own name, lease and decision key.  Only the
transport differs: the calls go out in pipelines of ``CHUNK`` over one connection, packed and parsed
by hiredis, with two pipelines in flight (the next one is built while Redis runs the previous one),
so that one Python process can stand in for 100k strategy processes and Redis, not this process,
sets the pace.

Registration: a strategy process asks the trader to admit it (``PUBLISH NS:joins`` from its report),
and the trader admits at most ``keys.JOINS_PER_TICK`` (1000) names per period at its boundary
tick.  For large N that takes N / 1000 periods, so :meth:`LoadGenerator.preregister` writes the
names straight into the registry and its backup (``SADD NS:strategies`` and
``NS:strategies:backup``, nothing else: no version bump, no deregistration records), as if the
trader had admitted them before the measurement.  Their first reports (state ``starting``) then
find them registered.
"""
from __future__ import annotations

import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass

import hiredis
from redis.connection import parse_url

from redismedian import keys as K
from redismedian.clock import boundary_ms
from redismedian.common import Settings, fmt_value, new_instance_id
from redismedian.connection import RedisSettings, make_client
from redismedian.scripts import (STRATEGY_DOORBELL, STRATEGY_DOORBELL_SHA, STRATEGY_REPORT, MetaArgs, TickRequest,
                                 meta_create, report_text, strategy_report_request, strategy_reported,
                                 strategy_tick_request, strategy_ticked)
from redismedian.strategy import META_CHECK_EVERY, default_signal_timeout_ms

CHUNK = 500      # reports per pipeline
IN_FLIGHT = 2    # pipelines sent before the first one's replies are read


@dataclass
class Submission:
    epoch: int
    seconds: float         # wall time to write every report
    submitted: int         # decisions accepted for the epoch (or reports accepted, for 'starting')
    refused: dict          # reply status -> count, for anything but a submission
    round_trips: int       # pipelines sent
    commands: int          # reports sent (fast path or STRATEGY_REPORT)
    registered: int        # replies that said "registered"

    @property
    def rate(self) -> float:
        return self.submitted / self.seconds if self.seconds > 0 else float("nan")


class _Wire:
    """One connection to the private Redis, speaking RESP through hiredis."""

    def __init__(self, redis_url: str, timeout: float = 120.0):
        opts = parse_url(redis_url)
        self.sock = socket.create_connection((opts.get("host", "127.0.0.1"), opts.get("port", 6379)), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()
        hello = []
        if opts.get("password"):
            hello.append(("AUTH", *([opts["username"]] if opts.get("username") else []), opts["password"]))
        hello.append(("CLIENT", "SETNAME", "bench-loadgen"))
        if opts.get("db"):
            hello.append(("SELECT", opts["db"]))
        self.sock.sendall(b"".join(hiredis.pack_command(c) for c in hello))
        for reply in self.replies(len(hello)):
            if isinstance(reply, Exception):
                raise reply

    def replies(self, count: int) -> list:
        out = []
        while len(out) < count:
            reply = self.reader.gets()
            if reply is False:
                data = self.sock.recv(1 << 18)
                if not data:
                    raise ConnectionError("Redis closed the load generator's connection")
                self.reader.feed(data)
                continue
            out.append(reply)
        return out

    def close(self) -> None:
        self.sock.close()


class LoadGenerator:
    def __init__(self, redis_url: str, namespace: str, period_ms: int, names: list[str], seed: int = 1):
        self.settings = Settings(RedisSettings(redis_url), namespace=namespace, period_ms=period_ms)
        self.keys = self.settings.keys
        self.period_ms = period_ms
        self.client = make_client(redis_url, socket_timeout=120.0, client_name="bench-loadgen-setup")
        self.sha = self.client.script_load(STRATEGY_REPORT)   # the private Redis never flushes it
        self.client.script_load(STRATEGY_DOORBELL)
        self.wire = _Wire(redis_url)
        self.names = list(names)
        self.instance = ""
        self.rng = random.Random(seed)
        # What Strategy sets: the lease (renewed at each report) outlives a period plus the signal
        # timeout; the decision key lives 10 periods, the doorbells 2.
        self.lease_ttl_ms = K.lease_ttl_ms(period_ms) + default_signal_timeout_ms(period_ms)
        self.decision_ttl_ms = K.ttl_ms(period_ms, K.DECISION_TTL_PERIODS)
        self.ready_ttl_ms = K.ttl_ms(period_ms, K.READY_TTL_PERIODS)
        self.start_ms = 0
        self.lease_owner = ""
        self.registered: set[str] = set()   # names whose last report found them registered
        self._lease_heads: dict[str, bytes] = {}
        self.scripts_sent = 0                 # EVALSHA calls sent so far (a full report, or a fast one's doorbell)

    # -- the fast report, packed -----------------------------------------------------------------
    def _fast_packer(self, epoch: int, meta: MetaArgs):
        """pack(name, value, check) -> the bytes of strategy_tick_request's commands for ``epoch``.

        The same commands, packed with less Python per report: what never changes for a name (its
        lease commands) is packed once, the rest per period.  ``submit`` checks the bytes against
        strategy_tick_request's for the first report of every pipeline."""
        k, pack = self.keys, hiredis.pack_command
        heads = self._lease_heads
        meta_head = pack(("TIME",)) + pack(("HMGET", k.meta, "period_ms", "instance"))
        count, ready, strategies = k.count(epoch), k.ready_channel, k.strategies
        dttl, rttl, ttl = self.decision_ttl_ms, self.ready_ttl_ms, meta.lease_ttl_ms

        def packed(name: str, value: str, state: str, reason: str, check: bool) -> bytes:
            head = heads.get(name)
            if head is None:
                lease = k.lease("strategy", name)
                head = heads[name] = pack(("GET", lease)) + pack(("PEXPIRE", lease, ttl, "XX"))
            return b"".join((meta_head if check else b"", head,
                             pack(("SET", k.decision(name), report_text(epoch, value, state, reason), "PX", dttl)),
                             pack(("EVALSHA", STRATEGY_DOORBELL_SHA, 2, strategies, count, name,
                                   "1" if value else "0", rttl, ready, epoch))))
        return packed

    # -- start-up ------------------------------------------------------------------------------
    def _run(self, source, keys, args):
        return self.client.register_script(source)(keys=list(keys), args=list(args))

    def meta_args(self) -> MetaArgs:
        return MetaArgs(self.period_ms, self.instance, new_instance_id(), self.lease_owner, self.lease_ttl_ms)

    def start(self) -> "LoadGenerator":
        """Make sure the deployment record exists (what ``Component.with_meta`` does without an ACL),
        then take the start time that goes into every lease (after the record's ``created``, like any
        process started against a live deployment)."""
        meta_create(self._run, self.keys, self.meta_args())
        sec, usec = self.client.time()
        self.start_ms = int(sec) * 1000 + int(usec) // 1000
        self.lease_owner = f"{self.settings.owner}|{self.start_ms}"
        return self

    def preregister(self) -> None:
        """Write every name into the registry and its backup, as the trader's admission would."""
        pipe = self.client.pipeline(transaction=False)
        for lo in range(0, len(self.names), 10_000):
            part = self.names[lo:lo + 10_000]
            pipe.sadd(self.keys.strategies, *part)
            pipe.sadd(self.keys.registry_backup, *part)
        pipe.execute()

    def values(self) -> list[str]:
        return [fmt_value(self.rng.gauss(0.5, 0.2)) for _ in self.names]

    def plan(self) -> tuple[list[str], list[str]]:
        """The names in a new random order (strategies report in no particular order, a different one
        each period) and a decision for each; made ahead of the boundary when timing matters."""
        names = list(self.names)
        self.rng.shuffle(names)
        return names, self.values()

    # -- one period ------------------------------------------------------------------------------
    def submit(self, epoch: int, starting: bool = False, plan: tuple | None = None) -> Submission:
        """One period's worth of reports for every simulated strategy: a decision each, or (``starting``)
        the report a strategy process makes at start-up ("started, waiting for the next period")."""
        if not self.lease_owner:
            self.start()
        names, values = plan or self.plan()
        if starting:
            values, state, reason = [""] * len(names), "starting", "started, waiting for the next period"
        else:
            state, reason = "ok", ""
        meta = self.meta_args()
        sha, k = self.sha, self.keys
        submitted, registered, refused, chunks = 0, 0, {}, 0
        # What each pipeline holds, in order: (name, value, None) for a full report, one reply; (name,
        # value, TickRequest) for a fast one, one reply per command.  A fast report whose replies
        # are not as expected is followed by the full report (told whether the doorbell counted), as
        # Strategy.report does.
        Item = tuple[str, str, "TickRequest | None"]
        todo: deque[tuple[int, str, str, bool | None]] = deque(
            (i, n, v, None) for i, (n, v) in enumerate(zip(names, values)))   # None: fast if registered
        sent: deque[list[Item]] = deque()

        def take(items: list[Item]) -> None:
            nonlocal submitted, registered
            got = self.wire.replies(sum(1 if req is None else len(req.commands) for _n, _v, req in items))
            at = 0
            for name, value, req in items:
                if req is not None:
                    replies, at = got[at:at + len(req.commands)], at + len(req.commands)
                    fast = strategy_ticked(req, replies, meta)
                    if fast.ok:
                        registered += 1
                        submitted += 1
                    else:
                        todo.append((0, name, value, fast.counted))
                    continue
                reply, at = got[at], at + 1
                if not isinstance(reply, list):
                    refused[f"error: {reply}"] = refused.get(f"error: {reply}", 0) + 1
                    continue
                r = strategy_reported(reply)
                if r.status != "ok":
                    refused[r.status] = refused.get(r.status, 0) + 1
                    continue
                if not self.instance and r.instance:
                    self.instance = r.instance
                if r.registered:
                    registered += 1
                    self.registered.add(name)
                if r.submitted or starting:
                    submitted += 1
                else:   # ok but not submitted: the epoch had ended
                    refused["late"] = refused.get("late", 0) + 1

        fast = self._fast_packer(epoch, meta)
        # One request per shape (with or without the record's check, with or without a decision):
        # judging the replies needs only the shape.
        shapes = {(c, v): strategy_tick_request(k, meta, name="-", epoch=epoch, value="1" if v else "", state=state,
                                                reason=reason, decision_ttl_ms=0, ready_ttl_ms=0, check_meta=c)
                  for c in (False, True) for v in (False, True)}
        t0 = time.perf_counter()
        while todo or sent:
            packed: list[bytes] = []
            items: list[Item] = []
            while todo and len(items) < CHUNK:
                i, name, value, counted = todo.popleft()
                # As a strategy process: the deployment record is checked at the first report and
                # every META_CHECK_EVERY reports after (staggered, as processes start at different
                # times); a registered strategy reports with the fast path's plain commands.
                check = starting or not self.instance or (epoch + i) % META_CHECK_EVERY == 0
                if counted is not None or name not in self.registered or not self.instance:
                    keys, args = strategy_report_request(
                        k, meta, name=name, epoch=epoch, value=value, state=state, reason=reason,
                        decision_ttl_ms=self.decision_ttl_ms, ready_ttl_ms=self.ready_ttl_ms,
                        start_ms=self.start_ms, check_meta=check, counted=bool(counted))
                    packed.append(hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args)))
                    items.append((name, value, None))
                else:
                    req = shapes[check, bool(value)]
                    one = fast(name, value, state, reason, check)
                    if not items:       # the packer's bytes are strategy_tick_request's
                        exact = strategy_tick_request(
                            k, meta, name=name, epoch=epoch, value=value, state=state, reason=reason,
                            decision_ttl_ms=self.decision_ttl_ms, ready_ttl_ms=self.ready_ttl_ms, check_meta=check)
                        if one != b"".join(hiredis.pack_command(c) for c in exact.commands):
                            raise AssertionError(f"the load generator's fast report differs: {exact.commands}")
                    packed.append(one)
                    items.append((name, value, req))
                self.scripts_sent += 1
            if items:
                self.wire.sock.sendall(b"".join(packed))
                sent.append(items)
                chunks += 1
            if sent and (len(sent) >= IN_FLIGHT or not todo):
                take(sent.popleft())
        seconds = time.perf_counter() - t0
        return Submission(epoch, seconds, submitted, refused, chunks, len(names), registered)

    def close(self) -> None:
        self.wire.close()
        self.client.close()


class LoadLoop(threading.Thread):
    """Submits the simulated strategies' decisions right after every period boundary, as strategy
    processes that report 1 ms after the boundary would (the decisions are drawn before it)."""

    def __init__(self, gen: LoadGenerator, clock, period_ms: int, offset_ms: float = 1.0):
        super().__init__(name="loadgen", daemon=True)
        self.gen, self.clock, self.period_ms, self.offset_ms = gen, clock, period_ms, offset_ms
        self.stop = threading.Event()
        self.sent = 0          # report calls sent so far (after each whole period's worth)
        self.late = 0
        self.periods: dict[int, dict] = {}   # epoch -> what was written, and when it was done
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                plan = self.gen.plan()
                epoch = self.clock.next_boundary(self.period_ms, offset_ms=self.offset_ms)
                if self.stop.is_set():
                    return
                sub = self.gen.submit(epoch, plan=plan)
                self.sent += sub.commands
                self.late += len(self.gen.names) - sub.submitted
                self.periods[epoch] = {"submitted": sub.submitted, "seconds": sub.seconds,
                                       "done_ms": self.clock.now_ms() - boundary_ms(epoch, self.period_ms),
                                       "refused": sub.refused}
        except BaseException as e:  # noqa: BLE001 - reported by the benchmark
            self.error = e

    def halt(self, timeout: float) -> None:
        self.stop.set()
        self.join(timeout)


def strategy_names(n: int, prefix: str = "L") -> list[str]:
    width = max(5, len(str(n)))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]
