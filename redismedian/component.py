"""The loop every component shares: wake at each period boundary, ride out outages, stop cleanly.

A component implements :meth:`Component.startup` (once, when Redis first answers) and
:meth:`Component.step` (once per epoch).  Everything about time, retries and signals
lives here, so each component's module holds only its own rules.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any, Callable, Protocol, Sequence, TypeVar

import redis

from . import keys as K
from .clock import ServerClock, boundary_ms, epoch_of
from .common import EXIT_FAILURE, EXIT_OK, FatalError, Settings, as_str, new_instance_id, parse_period_ms
from .connection import (Backoff, ErrorKind, Outage, classify, describe_error, make_client, redis_problem,
                         wrong_mode)
from .acl import user_name
from .metrics import NullMetrics
from .scripts import LOADERS, MetaArgs, lease_acquire, lease_release, load_scripts, meta_create, preamble, sha1

T = TypeVar("T")

# How long a stop request may take before the process exits anyway (the promise is 2 s).
STOP_GRACE_S = 1.5


class Exit(FatalError):
    """Leave the run loop on purpose: ``code`` is the process exit status (0 by default: e.g. a
    deregistered strategy), ``message`` is logged (at INFO when the code is 0).

    A FatalError with another default code rather than a class of its own: the run loop ends the
    same way for both, in one handler.  The name stays because it says "leave", not "failed".
    """

    def __init__(self, message: str, code: int = EXIT_OK) -> None:
        super().__init__(message, code)


class TimedScript(Protocol):
    """A registered script as :meth:`Component.script` returns it (timed for the metrics)."""

    def __call__(self, keys: Sequence[Any] = ..., args: Sequence[Any] = ...) -> Any: ...


class Component:
    kind = "component"

    def __init__(self, settings: Settings, name: str | None = None, client: redis.Redis | None = None,
                 clock: ServerClock | None = None, stop: threading.Event | None = None,
                 logger: logging.Logger | None = None, metrics: NullMetrics | None = None) -> None:
        self.settings = settings
        self.name = name
        self.keys = settings.keys
        self.period_ms = settings.period_ms
        self.client = client if client is not None else make_client(
            settings.redis, client_name=f"redismedian-{self.kind}", namespace=settings.namespace)
        self.clock = clock or ServerClock()
        self.stop = stop or threading.Event()
        self.log = logger or logging.getLogger(f"redismedian.{self.kind}")
        self.instance = ""            # NS:meta instance seen last; a change means Redis lost its data
        self.started = False
        self.last_epoch: int | None = None
        self.outage = Outage(settings.redis_url, self.log)
        self.backoff = Backoff(settings.backoff_cap)
        self._last_problem: str | None = None
        self._scripts: dict[str, TimedScript] = {}   # Lua source -> registered, timed caller
        self.metrics = metrics or NullMetrics()
        self.lease_owner = settings.owner  # the value of our name lease (the strategy adds its start time)
        # Under a named ACL user a generator or strategy may neither load scripts nor create the deployment
        # record (acl.py): it does not ask, so that nothing it does is an entry in Redis' ACL LOG.  Under the
        # default user (no ACL) it does both; after a refusal it does not ask again.
        restricted = settings.redis.user is not None and self.kind not in LOADERS
        self._meta_denied = restricted   # no creating the deployment record (the trader or the operator does)
        self._may_load = not restricted  # loading every script when Redis lost them
        self.interrupted = ""      # why the loop was held up since the last epoch ('' = it was not)

    # -- for subclasses ----------------------------------------------------
    def startup(self) -> None:
        """Runs once Redis answers: take the name, register, check the period."""

    def step(self, epoch: int) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Runs once on the way out (Redis may be gone: keep it short)."""

    @property
    def lease_ttl_ms(self) -> int:
        return K.lease_ttl_ms(self.period_ms)

    def meta_args(self) -> MetaArgs:
        # A new candidate instance id every call: if this process re-creates the record after Redis
        # lost its data, the id must differ from the one it created before, or nobody notices the loss.
        return MetaArgs(self.period_ms, self.instance, new_instance_id(), self.lease_owner, self.lease_ttl_ms)

    def run_script(self, source: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run one of scripts.py's scripts (the ``Runner`` its wrappers take), with the common checks
        of replies that start with a status word."""
        reply = self.script(source)(keys=keys, args=args)
        if preamble(reply) is not None:
            return self.check_reply(reply, self.name or self.kind)
        return reply

    def with_meta(self, call: Callable[[], T]) -> T:
        """``call()``, creating the deployment record first when it is missing.  Under the ACL only
        the trader and the operator may create it: the others wait for it (``Waiting``)."""
        try:
            return call()
        except NoMeta:
            waiting = Waiting(f"waiting for the deployment record {self.keys.meta}: this {self.kind}'s Redis user "
                              "may not create it (the trader or the operator does); start the trader")
            if self._meta_denied:
                raise waiting from None     # asked once: every refusal is an entry in Redis' ACL LOG
            try:
                meta_create(self.run_script, self.keys, self.meta_args())
            except redis.exceptions.ResponseError as e:
                if classify(e) is not ErrorKind.PERMISSION:
                    raise
                self._meta_denied = True
                raise waiting from None
            return call()

    def check_reply(self, reply: Any, what: str) -> list[Any]:
        """Common answers of every script (``scripts.Preamble``): time, deployment record, lease."""
        p = preamble(reply)
        assert p is not None  # run_script calls this only for a reply that has a preamble
        if p.now:
            self.clock.observe(p.now)
        if p.status == "period":
            message = self._period_conflict(p.detail)
            if not self.instance:
                raise FatalError(message)  # refused at start: it never agreed with this deployment
            # The record changed under a running process (re-created by a newcomer, or edited by hand):
            # report it every period until the operator settles it, rather than exiting over it.
            raise DataProblem(message)
        if p.status == "lease":
            raise FatalError(f"{self.kind} name {what!r} was taken over by another process ({p.detail}); "
                             "stopping so that only one process acts under this name")
        if p.status in ("wrongtype", "baddata"):
            raise DataProblem(p.detail)
        if p.status == "nometa":
            raise NoMeta(f"no deployment record {p.detail}")
        if p.detail:    # every other reply carries the deployment instance here
            if self.instance and p.detail != self.instance:
                self.log.warning("Redis lost its data (deployment record re-created); restoring this %s's state",
                                 self.kind)
            self.instance = p.detail
        return list(reply)

    def _period_conflict(self, recorded: Any) -> str:
        return (f"namespace {self.settings.namespace!r} runs with period {_fmt_period(recorded)}, "
                f"but this {self.kind} was started with {_fmt_period(self.period_ms)}: "
                "use the same --period, or another --namespace")

    def check_period_first(self) -> None:
        """At the start of ``startup``, before it says "started": refuse at once a deployment record that holds
        another period (FatalError, the message the scripts' check gives).  One plain ``HGET`` every
        role may make; anything else (no record yet, garbage, a refusal) is left to the scripts."""
        try:
            recorded = parse_period_ms(self.client.hget(self.keys.meta, "period_ms"))
        except redis.exceptions.ResponseError:
            return
        if recorded is not None and recorded != self.period_ms:
            raise FatalError(self._period_conflict(recorded))

    def script(self, source: str) -> TimedScript:
        """One of scripts.py's scripts, run by its SHA1 (``EVALSHA``: the ACL grants each role the
        hashes of its own scripts and nothing else), timed."""
        cache = self._scripts
        if source not in cache:
            def call(keys: Sequence[Any] = (), args: Sequence[Any] = (), _source: str = source,
                     _sha: str = sha1(source)) -> Any:
                t0 = time.perf_counter()
                try:
                    return self._evalsha(_source, _sha, list(keys), list(args))
                finally:
                    self.metrics.script_call(time.perf_counter() - t0)
            cache[source] = call
        return cache[source]

    def _evalsha(self, source: str, sha: str, keys: list[Any], args: list[Any]) -> Any:
        """``EVALSHA``.  After NOSCRIPT (Redis restarted, failed over, or its scripts were flushed)
        a user that may load scripts (the trader, the operator) loads every script and runs it again;
        one that may not (a generator or strategy under the ACL) polls for a short while, within the
        period, for the trader to load them, then waits (``Waiting``) until its next try."""
        loaded = False
        patience = self.clock.now_ms() + min(2000, self.period_ms // 4)
        poll = max(0.01, min(0.2, self.period_ms / 20000.0))
        while True:
            try:
                return self.client.evalsha(sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                if loaded:
                    raise
            if self.load_scripts(source):
                loaded = True
                continue
            if self.clock.now_ms() >= patience or self.clock.wait(self.stop, poll):
                raise Waiting(f"waiting for the trader to load this {self.kind}'s scripts: Redis does not hold them "
                              f"(restarted, failed over or flushed), and this {self.kind}'s Redis user may not load "
                              "them; start the trader")

    def load_scripts(self, *extra: str) -> bool:
        """Load every production script (and ``extra``) when our Redis user may; False when it may not
        (asked once: every refusal is an entry in Redis' ACL LOG)."""
        if self._may_load:
            try:
                load_scripts(self.client, *extra)
                return True
            except redis.exceptions.NoPermissionError:
                self._may_load = False
        return False

    def problem(self, text: str, epoch: int | None = None, level: int = logging.ERROR) -> None:
        """Log a data problem once until it changes (not every period).

        The epoch is shown but not compared: the same problem in the next epoch is not news.
        """
        if text != self._last_problem:
            if epoch is None:
                self.log.log(level, "%s", text)
            else:
                self.log.log(level, "cannot act on epoch %d: %s", epoch, text)
            self._last_problem = text

    def problem_cleared(self) -> None:
        if self._last_problem is not None:
            self.log.info("recovered from: %s", self._last_problem)
            self._last_problem = None

    # -- the loop ------------------------------------------------------------
    def next_epoch(self) -> int | None:
        """The epoch to act on now, waiting for its boundary; None when asked to stop."""
        while not self.stop.is_set():
            now = self.clock.now_ms()
            epoch = epoch_of(now, self.period_ms)
            if self.last_epoch is None or epoch > self.last_epoch:
                if self.last_epoch is not None and epoch > self.last_epoch + 1:
                    self.log.warning("skipped %d missed period(s) (stalled or Redis unavailable)",
                                     epoch - self.last_epoch - 1)
                    self.metrics.skipped(epoch - self.last_epoch - 1)
                return epoch
            target = boundary_ms(self.last_epoch + 1, self.period_ms)
            # +1 ms: never wake a hair before the boundary by the server's clock
            if self.clock.wait(self.stop, (target - now + 1) / 1000.0):
                return None
        return None

    def run(self, max_epochs: int | None = None) -> int:
        """Run until stopped; returns the process exit status.

        The steps, one method each: start (:meth:`_start`: the clock, ``startup`` once), one epoch
        (:meth:`next_epoch` waits for its boundary, :meth:`_one_epoch` runs ``step``), an outage
        (:meth:`_failed` sorts what either raised: ride it out, or stop in one line), and stop
        (:meth:`_shutdown_quietly`, on every way out).
        """
        done = 0
        try:
            while not self.stop.is_set():
                try:
                    if not self._start():
                        continue
                    epoch = self.next_epoch()
                    if epoch is None:
                        break
                    self._one_epoch(epoch)
                    done += 1
                    if max_epochs is not None and done >= max_epochs:
                        break
                except Exception as e:  # noqa: BLE001 - sorted by _failed: ridden out, or raised again
                    self._failed(e)
        except FatalError as e:     # Exit too: one line, no traceback, and its exit status
            (self.log.info if e.code == EXIT_OK else self.log.error)("%s", e)
            return e.code
        finally:
            self._shutdown_quietly()
        return 0

    def _start(self) -> bool:
        """Sync the clock when needed, and run ``startup`` until it succeeds once; False when it is
        to be tried again (after waiting for another component, or out a data problem)."""
        if not self.clock.synced or self.outage.active:
            self.clock.sync(self.client)
        if self.started:
            return True
        try:
            self.startup()
        except Waiting as e:
            self.problem(str(e), level=logging.WARNING)
            self._redis_answered()
            self.clock.wait(self.stop, min(1.0, self.period_ms / 1000.0))
            return False
        except (DataProblem, redis.exceptions.ResponseError) as e:
            if isinstance(e, redis.exceptions.ResponseError) and classify(e) is not ErrorKind.DATA:
                raise   # an outage, credentials, the ACL: _failed
            # e.g. the registry is not a set: report it, and try again shortly
            self.problem(f"cannot start: {describe_error(e)}")
            self._redis_answered()
            self.clock.wait(self.stop, self.backoff.next_delay())
            return False
        self.started = True
        self.problem_cleared()
        return True

    def _one_epoch(self, epoch: int) -> None:
        """``step(epoch)``: a problem with this epoch's data is reported (once) and the loop goes on."""
        try:
            self.step(epoch)
            self.problem_cleared()
        except Waiting as e:
            self.problem(str(e), level=logging.WARNING)
        except DataProblem as e:
            self.metrics.error("data_problem")
            self.problem(str(e), epoch)
        except redis.exceptions.ResponseError as e:
            # READONLY / TRYAGAIN are ResponseErrors too, but transient: retried as an outage (_failed)
            if classify(e) is not ErrorKind.DATA:
                raise
            self.metrics.error("redis_refused")
            self.problem(f"Redis refused a command: {describe_error(e)}", epoch)
        # Only now has Redis really answered: TIME alone also works on a read-only
        # replica or while it loads, where every script still fails.
        self._redis_answered()
        self.backoff.reset()
        self.last_epoch = epoch
        self.metrics.period((self.clock.now_ms() - boundary_ms(epoch, self.period_ms)) / 1000.0)

    def _failed(self, e: Exception) -> None:
        """What a start or an epoch raised: an outage is ridden out (logged once, retried with
        backoff); refused credentials, an ACL denial or a URL of the wrong mode stop the process in
        one line (FatalError); anything else goes on up as it is (Exit and FatalError to ``run``,
        a bug with its traceback)."""
        kind = classify(e)
        if kind is ErrorKind.TRANSIENT:
            self._outage(e)
            return
        url = self.settings.redis_url
        if kind in (ErrorKind.AUTH, ErrorKind.PERMISSION) or wrong_mode(e, url):
            raise FatalError(redis_problem(url, e, user="our user")) from None
        raise e

    def _outage(self, e: Exception) -> None:
        self.interrupted = "Redis unavailable"
        if not self.outage.active:
            self.metrics.error("redis_unavailable")
            self.metrics.redis_up(False)
        self.outage.failed(e, self.backoff.cap)
        self.clock.wait(self.stop, self.backoff.next_delay())

    def _redis_answered(self) -> None:
        if self.outage.active:
            self.outage.recovered()
            self.metrics.redis_up(True)

    def _shutdown_quietly(self) -> None:
        if not self.started:
            return
        try:
            self.shutdown()
        except Exception as e:  # noqa: BLE001 - Redis may be gone; we are leaving anyway
            self.log.debug("shutdown incomplete: %s", describe_error(e))

    def release_lease(self, key: str, value: str | None = None) -> None:
        """Give up a lease we hold, so that a successor need not wait for it to expire."""
        lease_release(self.run_script, key, owner=value or self.lease_owner)

    def redis_user(self) -> str:
        """Our Redis user's name, for messages (``ACL WHOAMI``; '' when it cannot be asked)."""
        try:
            return as_str(self.client.execute_command("ACL", "WHOAMI"))
        except redis.exceptions.RedisError:
            return ""


class DataProblem(Exception):
    """Something in Redis is not what it should be (wrong type, garbage); the epoch is skipped."""


class NoMeta(DataProblem):
    """The deployment record is missing (``Component.with_meta`` creates it, or waits for it)."""


class Waiting(DataProblem):
    """Waiting for something another component provides (logged once as a warning, not an error)."""


def acquire_name(component: Component, key: str, what: str) -> None:
    """Own ``what`` through the lease at ``key``, or raise FatalError when a live process owns it.

    A lease left by a dead process is taken over once it expires (at most one lease TTL,
    about 1.5 periods).  A holder that renews its lease while we wait is alive: refuse at once.
    """
    owner, ttl = component.lease_owner, component.lease_ttl_ms
    try:
        got = lease_acquire(component.run_script, key, owner=owner, ttl_ms=ttl)
    except redis.exceptions.ResponseError as e:
        if classify(e) is not ErrorKind.PERMISSION:
            raise
        user = component.redis_user()
        raise FatalError(f"Redis user {user or '(this user)'!r} may not act as {what}: under the ACL each "
                         f"{component.kind} runs with its own user ({user_name(component.kind, component.name)}); "
                         "start it with that "
                         f"user's credentials, or with the name this user owns") from None
    if got.ours:
        return
    holder, pttl = got.holder, got.pttl_ms
    component.log.warning("%s is held by %s; waiting up to %.1fs for its lease to expire",
                          what, holder, max(pttl, 0) / 1000)
    start = component.clock.now_ms()
    poll = max(0.05, min(0.25, component.period_ms / 4000))
    while not component.stop.is_set():
        if component.clock.wait(component.stop, poll):
            break
        got = lease_acquire(component.run_script, key, owner=owner, ttl_ms=ttl)
        if got.ours:
            component.log.info("took over %s from %s (its lease expired)", what, holder)
            return
        elapsed_ms = component.clock.now_ms() - start
        new_holder, new_pttl = got.holder, got.pttl_ms
        renewed = new_holder != holder or (pttl >= 0 and new_pttl > pttl - elapsed_ms + 100)
        if renewed or new_pttl < 0 and elapsed_ms > ttl:
            raise FatalError(f"{what} is owned by another live process ({new_holder}); "
                             f"stop it first, or pick another name")
    raise Exit("stopped while waiting for " + what, EXIT_FAILURE)


def install_signal_handlers(stop: threading.Event, logger: logging.Logger) -> None:
    """SIGTERM and SIGINT stop the process: the loop wakes at once and leaves cleanly.

    The handler only records the signal and wakes a watcher thread started here (one byte on a
    pipe): a handler runs between two bytecodes of the main thread, which may then hold the locks
    that a log line, ``Event.set`` or a new thread take.  The watcher logs the signal, sets the
    stop flag, and exits the process anyway, with a non-zero status, when the clean stop takes
    longer than STOP_GRACE_S: the main thread may be blocked in a call to a Redis that does not
    answer, for up to --socket-timeout, and the promise is a stop within 2 s.  (The line is logged
    by the watcher, not the loop, for the same reason: a blocked loop would log it too late.)
    A second signal exits at once.
    """
    received: list[int] = []
    wake_r, wake_w = os.pipe()

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            os._exit(128 + signum)
        received.append(signum)
        os.write(wake_w, b"!")     # never blocks: an empty pipe, one byte, once

    def watch() -> None:
        os.read(wake_r, 1)
        logger.info("received %s, stopping", signal.Signals(received[0]).name)
        stop.set()
        time.sleep(STOP_GRACE_S)   # the process normally ends meanwhile, and this daemon thread with it
        _force_exit(logger)

    threading.Thread(target=watch, name="redismedian-stop", daemon=True).start()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _force_exit(logger: logging.Logger) -> None:
    logger.warning("clean stop took longer than %.1fs (Redis not answering?); exiting now", STOP_GRACE_S)
    logging.shutdown()
    os._exit(EXIT_FAILURE)   # a hang is no success: a supervisor must see it


def _fmt_period(ms: Any) -> str:
    try:
        return f"{int(ms) / 1000:g}s"
    except (TypeError, ValueError):
        return repr(ms)
