"""The ``redismedian`` command line: a thin click layer over the components."""
from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, TypeVar
from urllib.parse import urlsplit

import click
import redis

from . import keys as K
from .common import (DEFAULT_PERIOD_S, EXIT_FAILURE, NAME_RULE, FatalError, Settings, check_name, check_namespace,
                     load_callable, parse_int, parse_name_list, parse_period_ms, period_to_ms)
from .connection import (DEFAULT_REDIS_URL, PASSWORD_ENV, RedisSettings, ErrorKind, check_url, classify, make_client,
                         redact_url, redis_problem, redis_settings)
from .health import DEFAULT_MISSED_WINDOW, epochs_text

if TYPE_CHECKING:
    from .component import Component

# a command function, as click's decorators take and return it
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# -- option callbacks: every mistake is a usage error (exit 2) that says what is allowed ----
def _validator(check: Callable[[Any], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback running ``check`` on the value; its ValueError becomes a usage error."""
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return callback


_url = _validator(check_url)
_namespace = _validator(check_namespace)
_period = _validator(period_to_ms)
_name = _validator(lambda v: check_name(v, "name"))
_names = _validator(parse_name_list)
_plugin = _validator(load_callable)


def _seconds(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    # "inf" parses as a float: refuse it here (it used to end in an OverflowError traceback)
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise click.BadParameter("must be a positive, finite number of seconds")
    return value


def _store(ctx: click.Context, param: click.Parameter, value: T) -> T:
    """Keep an option that every command shares in ctx.meta (so command signatures stay small)."""
    ctx.meta[f"redismedian.{param.name}"] = value
    return value


def _meta(name: str, default: Any = None) -> Any:
    return click.get_current_context().meta.get(f"redismedian.{name}", default)


def connection_options(f: F) -> F:
    """Credentials and TLS: read by :func:`_redis_settings`, never shown anywhere."""
    f = click.option("--tls-key", metavar="FILE", envvar="REDISMEDIAN_TLS_KEY", show_envvar=True,
                     expose_value=False, callback=_store,
                     help="Private key (PEM) of --tls-cert, for Redis servers that require client "
                          "certificates.")(f)
    f = click.option("--tls-cert", metavar="FILE", envvar="REDISMEDIAN_TLS_CERT", show_envvar=True,
                     expose_value=False, callback=_store,
                     help="Client certificate (PEM; may hold the key too) for Redis servers that require "
                          "client certificates (rediss:// only).")(f)
    f = click.option("--tls-ca-cert", metavar="FILE", envvar="REDISMEDIAN_TLS_CA_CERT", show_envvar=True,
                     expose_value=False, callback=_store,
                     help="CA certificate(s) (PEM) to verify the Redis server with (rediss:// only) "
                          "[default: the system's trusted CAs].")(f)
    f = click.option("--password-file", metavar="FILE", envvar="REDISMEDIAN_PASSWORD_FILE", show_envvar=True,
                     expose_value=False, callback=_store,
                     help="Read the Redis password from FILE (its last non-empty line) instead of the URL; "
                          "$REDISMEDIAN_PASSWORD works too. Passwords are never printed.")(f)
    return f


def sentinel_options(f: F) -> F:
    """Sentinel passwords: read by :func:`_redis_settings`, never shown anywhere."""
    from .sentinel import ENV_MASTER_PASSWORD, ENV_SENTINEL_PASSWORD
    f = click.option("--sentinel-password", envvar=ENV_SENTINEL_PASSWORD, show_envvar=True, expose_value=False,
                     callback=_store, help="Password of the sentinels (redis+sentinel:// URLs only).")(f)
    f = click.option("--master-password", envvar=ENV_MASTER_PASSWORD, show_envvar=True, expose_value=False,
                     callback=_store, help="Password of the Redis master found through the sentinels "
                                            "(instead of the one in a redis+sentinel:// URL).")(f)
    return f


def redis_options(f: F) -> F:
    f = sentinel_options(f)
    f = connection_options(f)
    f = click.option("--namespace", default=K.DEFAULT_NAMESPACE, show_default=True, envvar="REDISMEDIAN_NAMESPACE",
                     show_envvar=True, callback=_namespace,
                     help="Prefix of every key, so several deployments can share one Redis.")(f)
    f = click.option("--redis-url", default=DEFAULT_REDIS_URL, show_default=True, envvar="REDISMEDIAN_REDIS_URL",
                     show_envvar=True, callback=_url,
                     help="Redis to coordinate through: redis://[user[:password]@]host:port/db, rediss:// "
                          "for TLS, unix:///path.sock, or redis+sentinel://[[user]:password@]host:port"
                          "[,host:port...]/service[/db] to follow a master through Redis Sentinel, or "
                          "redis+cluster://[[user]:password@]host:port[,host:port...] (rediss+cluster:// for "
                          "TLS) for Redis Cluster, where every key is {NAMESPACE}:... (one hash slot).")(f)
    return f


def _redis_settings(redis_url: str, socket_timeout: float = 5.0) -> RedisSettings:
    """How to reach ``redis_url`` with this command's options (password file or environment, TLS,
    Sentinel passwords): built here once and handed down; usage error (exit 2) on a mistake.
    Every secret it holds is also handed to the log redactor."""
    from . import logs
    # $REDISMEDIAN_PASSWORD has no option (a password on a command line shows in `ps`): it is read
    # here, the one place that reads it.
    try:
        rs = redis_settings(redis_url, socket_timeout=socket_timeout, password_file=_meta("password_file"),
                            env_password=os.environ.get(PASSWORD_ENV),
                            tls_ca_cert=_meta("tls_ca_cert"), tls_cert=_meta("tls_cert"), tls_key=_meta("tls_key"),
                            sentinel_password=_meta("sentinel_password"), master_password=_meta("master_password"))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    for secret in (rs.password, rs.sentinel_password, rs.master_password):
        logs.add_secret(secret)
    try:
        logs.add_secret(urlsplit(redis_url).password)
    except ValueError:
        pass
    return rs


def _port(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and not 0 <= value <= 65535:
        raise click.BadParameter("must be a TCP port number (1 to 65535, or 0 for any free port)")
    return _store(ctx, param, value)


def component_options(f: F) -> F:
    f = click.option("--metrics-host", default="127.0.0.1", show_default=True, envvar="REDISMEDIAN_METRICS_HOST",
                     show_envvar=True, expose_value=False, callback=_store,
                     help="Address the metrics server listens on (0.0.0.0 to be scraped from other hosts or "
                          "containers).")(f)
    f = click.option("--metrics-port", type=int, default=None, envvar="REDISMEDIAN_METRICS_PORT", show_envvar=True,
                     expose_value=False, callback=_port,
                     help="Serve Prometheus metrics on this port at /metrics [default: no metrics server].")(f)
    f = click.option("--log-format", default="text", show_default=True, envvar="REDISMEDIAN_LOG_FORMAT",
                     show_envvar=True, type=click.Choice(["text", "json"]), expose_value=False, callback=_store,
                     help="text: lines for people; json: one JSON object per line, for log shippers.")(f)
    f = click.option("--log-level", default="INFO", show_default=True, envvar="REDISMEDIAN_LOG_LEVEL",
                     show_envvar=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                                         case_sensitive=False),
                     help="Least severe log level shown.")(f)
    f = click.option("--socket-timeout", default=5.0, show_default=True, type=float, callback=_seconds,
                     envvar="REDISMEDIAN_SOCKET_TIMEOUT", show_envvar=True,
                     help="Longest wait for one Redis reply, in seconds: a hung Redis never blocks longer.")(f)
    f = click.option("--period", default=DEFAULT_PERIOD_S, show_default=True, envvar="REDISMEDIAN_PERIOD",
                     show_envvar=True, callback=_period,
                     help="Length of one period in seconds (a float; 0.05 to 86400). Every component of a "
                          "namespace must use the same period.")(f)
    return redis_options(f)


def _settings(redis_url: str, namespace: str, period: int = int(DEFAULT_PERIOD_S * 1000),
              socket_timeout: float = 5.0) -> Settings:
    return Settings(redis=_redis_settings(redis_url, socket_timeout), namespace=namespace, period_ms=period)


def _timeout_ms(value: float | None, period_ms: int, option: str) -> int | None:
    if value is None:
        return None
    ms = int(round(value * 1000))
    if not 0 < ms < period_ms:
        raise click.UsageError(f"{option} must be shorter than the period ({period_ms / 1000:g}s), got {value:g}s")
    return ms


def _run(component: Component, log_level: str) -> None:
    from . import __version__, logs
    from .component import install_signal_handlers
    logs.setup(log_level, fmt=_meta("log_format") or "text",
               fields={"component": component.kind, "name": component.name,
                       "namespace": component.settings.namespace})
    port = _meta("metrics_port")
    if port is not None:
        from .metrics import Metrics, serve
        host = _meta("metrics_host") or "127.0.0.1"
        metrics = Metrics(component.kind, component.name, component.settings.namespace, component.settings.period,
                          version=__version__)
        try:
            port = serve(metrics, host, port)
        except OSError as e:
            component.log.error("cannot serve metrics on %s:%s: %s", host, port, e.strerror or e)
            sys.exit(EXIT_FAILURE)
        component.metrics = metrics
        component.log.info("metrics at http://%s:%d/metrics", host, port)
    install_signal_handlers(component.stop, component.log)
    sys.exit(component.run())


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="redismedian")
def cli() -> None:
    """redismedian: generators, strategies and a trader that publishes the median of the strategies'
    decisions every period, coordinated through one Redis.

    Start with `redismedian demo`; `redismedian COMMAND --help` explains each command."""


@cli.command("generator", context_settings=CONTEXT)
@click.option("-n", "--name", required=True, callback=_name, help=f"Generator name ({NAME_RULE}).")
@click.option("--signal", "signal_fn", default="redismedian.generator:default_signal", show_default=True,
              callback=_plugin, envvar="REDISMEDIAN_SIGNAL_FUNCTION", show_envvar=True,
              help="module:function called with the epoch number (int), returning the signal "
                   "(a finite float). The default is uniform random in [0, 1).")
@component_options
def generator_cmd(name: str, signal_fn: Callable[[int], float], redis_url: str, namespace: str, period: int,
                  socket_timeout: float, log_level: str) -> None:
    """Compute a signal once per period and write it, timestamped, into Redis."""
    from .generator import Generator
    _run(Generator(_settings(redis_url, namespace, period, socket_timeout), name=name, signal_fn=signal_fn),
         log_level)


@cli.command("strategy", context_settings=CONTEXT)
@click.option("-n", "--name", required=True, callback=_name, help=f"Strategy name ({NAME_RULE}).")
@click.option("--signals", required=True, callback=_names, envvar="REDISMEDIAN_SIGNALS", show_envvar=True,
              help="Comma-separated generator names whose signals this strategy reads, e.g. g2,g3.")
@click.option("--decide", "decide_fn", default="redismedian.strategy:default_decide", show_default=True,
              callback=_plugin, envvar="REDISMEDIAN_DECIDE_FUNCTION", show_envvar=True,
              help="module:function called with {generator: value} (in --signals order), "
                   "returning the decision (a finite float). The default is the mean.")
@click.option("--signal-timeout", type=float, default=None, callback=_seconds, envvar="REDISMEDIAN_SIGNAL_TIMEOUT",
              show_envvar=True,
              help="Seconds after the period starts to wait for all signals before reporting an error "
                   "[default: half the period].")
@component_options
def strategy_cmd(name: str, signals: list[str], decide_fn: Callable[[Mapping[str, float]], float],
                 signal_timeout: float | None, redis_url: str, namespace: str, period: int, socket_timeout: float,
                 log_level: str) -> None:
    """Ask the trader to register this strategy, then each period read the signals, decide, and submit
    the decision."""
    from .strategy import Strategy
    _run(Strategy(_settings(redis_url, namespace, period, socket_timeout), name=name, generators=signals,
                  decide_fn=decide_fn, signal_timeout_ms=_timeout_ms(signal_timeout, period, "--signal-timeout")),
         log_level)


@cli.command("trader", context_settings=CONTEXT)
@click.option("--decision-timeout", type=float, default=None, callback=_seconds,
              envvar="REDISMEDIAN_DECISION_TIMEOUT", show_envvar=True,
              help="Seconds after the period starts by which every registered strategy must have submitted; "
                   "later, the trader enters the error state for that period [default: 80% of the period].")
@click.option("--medians-maxlen", type=click.IntRange(min=1), default=K.DEFAULT_MEDIANS_MAXLEN,
              show_default=True, envvar="REDISMEDIAN_MEDIANS_MAXLEN", show_envvar=True,
              help="Approximate number of entries kept in the medians stream.")
@click.option("--on-median", "on_median", default=None, callback=_plugin, envvar="REDISMEDIAN_ON_MEDIAN",
              show_envvar=True, metavar="MODULE:FUNC",
              help="Action run by the leading trader for every published epoch, after the publication: "
                   "FUNC(epoch, median, fence). At least once per epoch (also across a leader crash); "
                   "never for an unpublished epoch; an exception is logged and retried next period. Pass "
                   "the fence to the system you act on, so that it can refuse a stale leader.")
@click.option("--min-replicas", type=click.IntRange(min=0), default=0, show_default=True,
              envvar="REDISMEDIAN_MIN_REPLICAS", show_envvar=True,
              help="After publishing a median, WAIT until this many replicas hold it (at most until the period "
                   "ends). Only an acknowledged median counts as published: --on-median runs for it alone; "
                   "one not acknowledged in time is never acted on, is recorded as a gap in NS:events, and "
                   "puts the trader in error naming the replicas (check exits 1). A trader taking the lead "
                   "right after another does not publish that epoch. 0: no WAIT. Run every trader of a "
                   "deployment with the same value.")
@click.option("--wait-aof", is_flag=True, envvar="REDISMEDIAN_WAIT_AOF", show_envvar=True,
              help="Send WAITAOF 1 N instead of WAIT N: a median counts as published only once it is on disk "
                   "(fsynced) in the master's append-only file and, with --min-replicas N, in N replicas' "
                   "files too; otherwise as --min-replicas says. Needs Redis 7.2 or later, or Valkey (the "
                   "trader refuses to start on a server without WAITAOF), appendonly yes on the master and on "
                   "the replicas counted, and under the ACL a trader user rendered with `redismedian acl "
                   "--wait-aof`.")
@click.option("--record-inputs/--no-record-inputs", default=True, show_default=True,
              envvar="REDISMEDIAN_RECORD_INPUTS", show_envvar=True,
              help="Record in each NS:medians entry the decisions it was computed from (field inputs), so that "
                   "`redismedian verify` can recompute it. Costs about 10 bytes per strategy per epoch (see "
                   "docs/guarantees.md); not recorded past 512 KiB an epoch.")
@component_options
def trader_cmd(decision_timeout: float | None, medians_maxlen: int,
               on_median: Callable[[int, float, int], object] | None, min_replicas: int, wait_aof: bool,
               record_inputs: bool, redis_url: str, namespace: str, period: int, socket_timeout: float,
               log_level: str) -> None:
    """Check every period that all registered strategies submitted, and publish their median."""
    from .trader import Trader
    _run(Trader(_settings(redis_url, namespace, period, socket_timeout),
                decision_timeout_ms=_timeout_ms(decision_timeout, period, "--decision-timeout"),
                medians_maxlen=medians_maxlen, on_median=on_median, min_replicas=min_replicas,
                wait_aof=wait_aof, record_inputs=record_inputs), log_level)


def _redis_problem(redis_url: str, e: BaseException) -> str:
    """One line saying what went wrong talking to Redis (never a password)."""
    return redis_problem(redis_url, e)


@contextlib.contextmanager
def _redis_errors(redis_url: str) -> Iterator[None]:
    """Any Redis error inside becomes a one-line error (exit 1), never a traceback."""
    try:
        yield
    except redis.exceptions.RedisError as e:
        raise click.ClickException(_redis_problem(redis_url, e)) from None


def _operator_client(redis_url: str, namespace: str) -> redis.Redis:
    """A client for one-shot operator commands: fail fast with one line instead of retrying."""
    client = make_client(_redis_settings(redis_url), namespace=namespace)
    try:
        client.ping()
    except Exception as e:  # noqa: BLE001 - reported in one line
        raise click.ClickException(_redis_problem(redis_url, e)) from None
    return client


@cli.command("deregister", context_settings=CONTEXT)
@click.argument("name", required=False, callback=_name)
@click.option("-n", "--name", "name_opt", callback=_name, help="Strategy to deregister (same as the argument).")
@redis_options
def deregister_cmd(name: str | None, name_opt: str | None, redis_url: str, namespace: str) -> None:
    """Deregister strategy NAME so the trader stops waiting for it.

    Like `redis-cli SREM NAMESPACE:strategies NAME`, and it also records the deregistration, so
    that even the last strategy is told apart from a registry lost by accident (which is restored).
    A running strategy of that name notices, stops submitting and exits."""
    from .status import deregister
    if name and name_opt and name != name_opt:
        raise click.UsageError(f"two different names given: {name!r} and {name_opt!r}")
    name = name or name_opt
    if not name:
        raise click.UsageError("give the strategy name: redismedian deregister NAME (or -n NAME)")
    client = _operator_client(redis_url, namespace)
    try:
        with _redis_errors(redis_url):
            deregister(client, K.Keys.for_url(namespace, redis_url), name)
    except FatalError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"deregistered {name}")


@cli.command("status", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")
@click.option("-w", "--watch", is_flag=True,
              help="Keep showing the status, refreshed just after every period boundary, until Ctrl-C.")
@click.option("--interval", type=float, default=None, callback=_seconds,
              help="With --watch: refresh every this many seconds instead of every period.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="With --watch: stop after this many refreshes [default: until Ctrl-C].")
@redis_options
def status_cmd(as_json: bool, watch: bool, interval: float | None, count: int | None, redis_url: str,
               namespace: str) -> None:
    """Show every generator, strategy and the trader: state, last value, epoch, age, and why a part
    is in error. With --watch, a live view."""
    if watch:
        with _ctrl_c_stops(lambda: click.echo("")):
            _status_watch(as_json, interval, count, redis_url, namespace)
        return
    from .status import gather, render, to_json
    client = _operator_client(redis_url, namespace)
    keys = K.Keys.for_url(namespace, redis_url)
    if interval is not None or count is not None:
        raise click.UsageError("--interval and --count only go with --watch")
    with _redis_errors(redis_url):
        data = gather(client, keys)
    click.echo(to_json(data) if as_json else render(data, redact_url(redis_url)))


def _status_watch(as_json: bool, interval: float | None, count: int | None, redis_url: str,
                  namespace: str) -> None:
    """``status --watch``: a frame just after every period boundary (or every ``interval`` s)."""
    from .ops import watch as watch_loop
    from .status import gather, render, to_json
    client = _operator_client(redis_url, namespace)
    keys = K.Keys.for_url(namespace, redis_url)

    def frame() -> tuple[str, int | None, int | None]:
        try:
            data = gather(client, keys)
        except redis.exceptions.RedisError as e:
            # An outage or garbage passes: retry.  A refusal or a URL of the wrong mode never will.
            if classify(e) in (ErrorKind.AUTH, ErrorKind.PERMISSION, ErrorKind.FATAL):
                raise click.ClickException(_redis_problem(redis_url, e)) from None
            return f"{_redis_problem(redis_url, e)} (retrying)", None, None
        text = to_json(data) if as_json else render(data, redact_url(redis_url))
        return text, data["server_time_ms"], data["period_ms"]
    watch_loop(frame, lambda text: click.echo(text), interval=interval, count=count,
               clear=sys.stdout.isatty() and not as_json)


@contextlib.contextmanager
def _ctrl_c_stops(on_stop: Callable[[], object] = lambda: None) -> Iterator[None]:
    """SIGINT (Ctrl-C, kill -INT) anywhere inside (connecting, or the loop) ends the command quietly
    with exit 0, even in a process started with SIGINT ignored (a background job of a shell script:
    Python then installs no KeyboardInterrupt of its own, and `follow &` or `status --watch &` could
    only be killed harder).  Entered first thing, before the command connects."""
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        on_stop()


def _check_client(redis_url: str, namespace: str, wait_s: float | None) -> redis.Redis:
    """``check``'s client: with --wait, a Redis that does not answer yet is waited for too (no
    ping first: the first verdict's error is retried)."""
    if wait_s:
        return make_client(_redis_settings(redis_url), namespace=namespace)
    return _operator_client(redis_url, namespace)


@cli.command("check", context_settings=CONTEXT)
@click.argument("kind", required=False, type=click.Choice(["generator", "strategy", "trader"]))
@click.argument("name", required=False, callback=_name)
@click.option("--missed-window", type=click.IntRange(min=0), default=DEFAULT_MISSED_WINDOW, show_default=True,
              metavar="N",
              help="`check trader` and the whole-deployment check fail while the trader missed an epoch (did "
                   "not publish it: stalled, Redis outage, lead lost) within the last N periods; 0: never "
                   "fail on missed epochs.")
@click.option("--wait", "wait_s", type=float, default=None, callback=_seconds, metavar="S",
              help="Wait up to S seconds for a healthy verdict, checking again every 0.2 s or so (Redis "
                   "unreachable counts as unhealthy, and is waited for too): exit 0 as soon as it is healthy, "
                   "1 with the reason at the deadline. For scripts, e.g. after `deregister` or a start "
                   "[default: judge once].")
@redis_options
def check_cmd(kind: str | None, name: str | None, missed_window: int, wait_s: float | None, redis_url: str,
              namespace: str) -> None:
    """Exit 0 when healthy, 1 otherwise, printing why: for container healthchecks and monitoring.

    Without arguments, checks the whole deployment (the trader published for the current or the
    previous period and missed no epoch recently; every registered strategy and every generator
    is ok and current), reading everything like `status` (the operator user can); `status` shows
    the same states and reasons. With KIND (generator, strategy or trader) and NAME (the
    generator's or strategy's name; none for the trader), checks that one component, reading only
    its own keys, so each component's own Redis user can run its check.

    With --wait S, judges again until the verdict is healthy or S seconds have passed."""
    from .ops import check_component, check_deployment, judged_until
    from .status import gather
    from .text import shown
    if kind == "trader" and name:
        raise click.UsageError("`check trader` takes no name (there is one leading trader per namespace)")
    if kind in ("generator", "strategy") and not name:
        raise click.UsageError(f"give the {kind}'s name: redismedian check {kind} NAME")
    try:
        client = _check_client(redis_url, namespace, wait_s)
        keys = K.Keys.for_url(namespace, redis_url)
        with _redis_errors(redis_url):
            health = judged_until(lambda: check_component(client, keys, kind, name, missed_window=missed_window)
                                  if kind else check_deployment(gather(client, keys), missed_window=missed_window),
                                  wait_s, retry=lambda e: classify(e) is ErrorKind.TRANSIENT)
    except click.UsageError:
        raise
    except click.ClickException as e:
        click.echo(shown(f"UNHEALTHY: {e.format_message()}", None))   # one line, always
        sys.exit(EXIT_FAILURE)
    click.echo(health.text())
    sys.exit(0 if health.healthy else EXIT_FAILURE)


@cli.command("follow", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line: medians as {epoch, median, count, members, ts, fence}; epochs "
                   "that were not published as {status: error|missed|unacknowledged, epoch, last, reason, ts, fence}.")
@click.option("--since", metavar="ID|EPOCH",
              help="Start with the entries after this stream ID (<ms>-<seq>), or from this epoch on "
                   "[default: only what is published from now on].")
@redis_options
def follow_cmd(as_json: bool, since: str | None, redis_url: str, namespace: str) -> None:
    """Print every median as it is published (one line per epoch), and report, as they happen, the
    epochs the trader did not publish (error, missed) on stderr. Rides out Redis outages. Ctrl-C ends it."""
    import logging as _logging

    _logging.basicConfig(level=_logging.WARNING, format="%(levelname)-7s %(name)s: %(message)s")
    stop = threading.Event()
    with _ctrl_c_stops(stop.set):
        _follow(as_json, since, redis_url, namespace, stop)


def _follow(as_json: bool, since: str | None, redis_url: str, namespace: str, stop: threading.Event) -> None:
    import json

    from .following import Median, follow, start_id
    client = _operator_client(redis_url, namespace)
    try:
        with _redis_errors(redis_url):
            # a bad --since is a usage error, before following
            start_id(client, K.Keys.for_url(namespace, redis_url), since)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    try:
        for item in follow(redis_url, namespace, since, client=client, stop=stop):
            if as_json:
                click.echo(json.dumps(item.as_json(), sort_keys=True))
            elif isinstance(item, Median):
                click.echo(f"epoch {item.epoch}  median {item.median!r}  ({item.count} "
                           f"{'strategy' if item.count == 1 else 'strategies'}, fence {item.fence})")
            elif item.status == "error":
                click.echo(f"epoch {item.epoch}: not published: trader in error: {item.reason}", err=True)
            elif item.status == "unacknowledged":
                click.echo(f"epoch {item.epoch}: median written but not published (replicas): {item.reason}",
                           err=True)
            else:
                click.echo(f"{epochs_text(item.epoch, item.last)}: missed: {item.reason}", err=True)
    except redis.exceptions.RedisError as e:
        raise click.ClickException(_redis_problem(redis_url, e)) from None


@cli.command("history", context_settings=CONTEXT)
@click.option("--since", metavar="WHEN",
              help="Only medians published since WHEN: a duration ago (30s, 15m, 2h, 7d, 1w) or an ISO 8601 "
                   "date/time (2024-05-01, 2024-05-01T12:00:00Z; UTC when no zone is given).")
@click.option("--until", metavar="WHEN", help="Only medians published until WHEN (same forms as --since).")
@click.option("--limit", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Show at most the most recent N medians of the range (0: all of them).")
@click.option("--csv", "as_csv", is_flag=True,
              help="Print CSV (time,epoch,median,count,members,fence,id) with a header line.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@redis_options
def history_cmd(since: str | None, until: str | None, limit: int, as_csv: bool, as_json: bool, redis_url: str,
                namespace: str) -> None:
    """Published medians, oldest first, from the NS:medians stream (time is the Redis server's, UTC)."""
    import json
    from .clock import time_reply_ms
    from .ops import history, history_csv, history_table, parse_since
    if as_csv and as_json:
        raise click.UsageError("choose one of --csv and --json")
    client = _operator_client(redis_url, namespace)
    with _redis_errors(redis_url):
        now = time_reply_ms(client.time())
        try:
            lo = parse_since(since, now) if since else None
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--since") from None
        try:
            hi = parse_since(until, now) if until else None
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--until") from None
        try:
            rows = history(client, K.Keys.for_url(namespace, redis_url), lo, hi, limit or None)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    if as_csv:
        click.echo(history_csv(rows), nl=False)
    elif as_json:
        click.echo(json.dumps([{k: v for k, v in r.items() if k != "median_text"} for r in rows], indent=2))
    else:
        click.echo(history_table(rows))


@cli.command("verify", context_settings=CONTEXT)
@click.option("--since", metavar="EPOCH", type=click.IntRange(min=0), default=None,
              help="Only the medians of this epoch and later [default: the whole NS:medians history].")
@redis_options
def verify_cmd(since: int | None, redis_url: str, namespace: str) -> None:
    """Recompute every published median from the inputs recorded with it (each member's decision) with
    the trader's own code: exit 0 when all hold, 1 naming each epoch that does not (an entry without
    recorded inputs does not hold)."""
    from .verifying import verify
    client = _operator_client(redis_url, namespace)
    with _redis_errors(redis_url):
        checked, bad = verify(client, K.Keys.for_url(namespace, redis_url), since)
    for epoch, why in bad:
        click.echo(f"epoch {epoch}: does not hold: {why}")
    if bad:
        raise click.ClickException(f"{len(bad)} of {checked} medians do not hold")
    click.echo(f"{checked} medians checked: all hold")


def _epoch_range(text: str) -> tuple[int, int]:
    first, sep, last = text.partition(":")
    a, b = parse_int(first.strip()), parse_int(last.strip())
    if not sep or a is None or b is None or a < 0 or b < a:
        raise ValueError(f"{text!r}: give FIRST:LAST, two epoch numbers with FIRST <= LAST, e.g. 29000000:29000059")
    return a, b


@cli.command("replay", context_settings=CONTEXT)
@click.option("--topology", required=True, metavar="FILE",
              help="TOML file with one table per strategy: [strategies.X] signals = [\"g1\"], and optionally "
                   "decide = \"module:function\" (default: the strategy command's).")
@click.option("--signals-csv", metavar="FILE",
              help="Replay the signals of this CSV file (epoch,generator,value[,status[,error[,ts]]], in epoch "
                   "order; what `redismedian signals --csv` writes) [default: the namespace's feeds "
                   "NS:signals:<g>, from the first epoch that every one still holds].")
@click.option("--epochs", metavar="FIRST:LAST", callback=_validator(_epoch_range),
              help="Compute the signals of epochs FIRST to LAST with the signal plug-ins of the topology's "
                   "[generators.NAME] tables (as the generator command does) instead of reading recorded ones.")
@click.option("--since", type=click.IntRange(min=0), metavar="EPOCH", help="Replay only the epochs from EPOCH on.")
@click.option("--period", default=None, callback=_period, metavar="SECONDS",
              help="The deployment's period: a signal written (its ts) after a strategy's signal timeout then "
                   "does not count for it, as live [default: the namespace's, when Redis is read; else every "
                   "recorded signal counts].")
@click.option("--csv", "as_csv", is_flag=True,
              help="Print CSV: epoch,median[,live_median],<one column per strategy>,reason (a column is empty "
                   "where there is no median or decision).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per epoch: {epoch, median, reason, decisions, reasons}.")
@click.option("--compare-live", is_flag=True,
              help="Compare every replayed epoch with what the live trader recorded (NS:medians, NS:events): "
                   "exit 0 when all agree exactly, 1 naming each epoch that differs and how (on stderr).")
@click.option("--plot", metavar="FILE.png",
              help="Also draw the replayed median and each strategy's decisions (and the live median with "
                   "--compare-live) into this PNG file; needs matplotlib (pip install 'redismedian[bench]').")
@redis_options
def replay_cmd(topology: str, signals_csv: str | None, epochs: tuple[int, int] | None, since: int | None,
               period: int | None, as_csv: bool, as_json: bool, compare_live: bool, plot: str | None, redis_url: str,
               namespace: str) -> None:
    """Run the topology's plug-ins over recorded signals, offline: for every epoch, each strategy's
    decision (or why it has none) and the median the trader would publish (or its error), computed
    by the same code as the live processes. Epochs without any signal in between are replayed too."""
    import functools
    from . import replaying as RP
    if as_csv and as_json:
        raise click.UsageError("choose one of --csv and --json")
    if epochs and signals_csv:
        raise click.UsageError("choose one of --signals-csv (recorded signals) and --epochs (computed ones)")
    try:
        topo = RP.load_topology(topology)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--topology") from None
    computed = None
    if epochs:
        try:
            computed = _Counted(RP.computed_signals(topo, *epochs))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--epochs") from None
    if plot:
        try:
            RP.require_matplotlib()
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--plot") from None
    keys = K.Keys.for_url(namespace, redis_url)
    client = _operator_client(redis_url, namespace) if compare_live or not (signals_csv or epochs) else None
    with _redis_errors(redis_url):
        if period is None and client is not None:
            period = parse_period_ms(client.hget(keys.meta, "period_ms"))
        if computed is not None and epochs:
            source: Any = computed
            total = (epochs[1] - epochs[0] + 1) * len(topo.signal_names)
            done = functools.partial(getattr, source, "count")
        elif signals_csv:
            try:
                source = RP.CsvSignals(signals_csv, since)   # skips the rows before --since itself
            except ValueError as e:
                raise click.BadParameter(str(e), param_hint="--signals-csv") from None
            total, done = source.size, functools.partial(getattr, source, "bytes_read")
        else:
            assert client is not None
            lengths = RP.feed_lengths(client, keys, topo.signal_names)
            for g in [g for g, n in lengths.items() if not n]:
                click.echo(f"replay: no signal recorded for generator {g} ({keys.signal_feed(g)} is empty or "
                           "missing): the strategies that read it have no decision", err=True)
            total = sum(lengths.values())
            source = _Counted(RP.feed_signals(client, keys, topo.signal_names, since, aligned=True))
            done = functools.partial(getattr, source, "count")
        comparison = RP.Comparison(RP.read_live(client, keys)) if compare_live and client is not None else None
        signals = source if since is None or signals_csv else (s for s in source if s.epoch >= since)
        try:
            replayed = _replay_out(RP, topo, signals, period, as_csv, as_json, comparison, plot, total, done)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    if comparison is not None:
        for epoch, diff in comparison.differences:
            click.echo(f"epoch {epoch}: {diff}", err=True)
        click.echo(f"replay: {comparison.summary(replayed)}", err=True)
        if not comparison.agrees:
            sys.exit(EXIT_FAILURE)


class _Counted:
    """An iterator that counts what went through it (the progress of a feed replay)."""

    def __init__(self, it: Iterator[Any]):
        self.it, self.count = it, 0

    def __iter__(self) -> Iterator[Any]:
        for x in self.it:
            self.count += 1
            yield x


def _replay_out(RP: Any, topo: Any, signals: Any, period: int | None, as_csv: bool, as_json: bool, comparison: Any,
                plot: str | None, total: int, done: Callable[[], int]) -> int:
    """Stream the replay to stdout (a progress bar on stderr when it is a terminal); the epoch count."""
    import csv
    import json
    out = sys.stdout
    names = topo.names
    writer = csv.writer(out, lineterminator="\n") if as_csv else None
    table = RP.Table(names, comparison is not None)
    series = RP.Series(names) if plot else None
    if writer is not None:
        writer.writerow(RP.csv_header(names, comparison is not None))
    elif not as_json:
        out.write(table.header() + "\n")
    bar: Any = (click.progressbar(length=max(total, 1), label="replaying", file=sys.stderr)
                if total and sys.stderr.isatty() else contextlib.nullcontext())
    n = 0
    with bar:
        for r, median_text, texts in RP.Replayer(topo, period).run_texts(signals):
            n += 1
            if comparison is not None:
                comparison.add(r)
            if writer is not None:
                writer.writerow(RP.csv_row(r, names, comparison, (median_text, texts)))
            elif as_json:
                d = r.as_json()
                if comparison is not None:
                    d["live_median"] = comparison.live_median(r.epoch)
                out.write(json.dumps(d, sort_keys=True) + "\n")
            else:
                out.write(table.row(r, comparison) + "\n")
            if series is not None:
                series.add(r, comparison)
            if n % 1024 == 0 and hasattr(bar, "update"):
                bar.update(done() - bar.pos)
        if hasattr(bar, "update"):
            bar.update(max(total, 1) - bar.pos)
    out.flush()
    if series is not None and plot:
        RP.plot(series, plot)
    return n


@cli.command("signals", context_settings=CONTEXT)
@click.option("--csv", "as_csv", is_flag=True,
              help="Print CSV epoch,generator,value,status,error,ts (ts: server ms it was written) with a header "
                   "line: what `replay --signals-csv` reads.")
@click.option("--since", type=click.IntRange(min=0), metavar="EPOCH",
              help="Only the signals of EPOCH and later (to append to an archive: the last epoch archived + 1) "
                   "[default: from the first epoch that every feed still holds].")
@click.option("--generators", callback=_names, metavar="G1,G2",
              help="Only these generators' feeds [default: every feed NS:signals:<g> of the namespace].")
@click.option("--no-header", is_flag=True, help="Leave out the CSV header line (to append to an archive).")
@redis_options
def signals_cmd(as_csv: bool, since: int | None, generators: list[str] | None, no_header: bool, redis_url: str,
                namespace: str) -> None:
    """The signals on the generators' feeds (each keeps about the last 1,000), oldest epoch first: to
    archive them for `redismedian replay --signals-csv`."""
    from . import replaying as RP
    client = _operator_client(redis_url, namespace)
    keys = K.Keys.for_url(namespace, redis_url)
    out = sys.stdout
    with _redis_errors(redis_url):
        names = generators or RP.feed_generators(client, keys)
        signals = RP.feed_signals(client, keys, names, since, aligned=True)
        if as_csv:
            RP.write_csv(signals, out, header=not no_header)
        else:
            out.write(f"{'epoch':>10}  {'generator':<16}  {'value':>22}  status  error\n")
            for s in signals:
                out.write(f"{s.epoch:>10}  {s.generator:<16}  {s.value:>22}  {s.status:<6}  {s.error}".rstrip()
                          + "\n")
    out.flush()


@cli.command("acl", context_settings=CONTEXT)
@click.option("--generators", required=True, callback=_names, help="Comma-separated generator names, e.g. g1,g2,g3.")
@click.option("--strategies", required=True, callback=_names, help="Comma-separated strategy names, e.g. X,Y.")
@click.option("--namespace", default=K.DEFAULT_NAMESPACE, show_default=True, envvar="REDISMEDIAN_NAMESPACE",
              show_envvar=True, callback=_namespace, help="The deployment's key prefix.")
@click.option("--cluster", is_flag=True, help="Rules for a Redis Cluster (redis+cluster:// URLs): keys in the "
              "{NAMESPACE}:... form, and CLUSTER SLOTS for every user. Load the file on every node.")
@click.option("--wait-aof", is_flag=True, help="The trader user may also send WAITAOF (for `trader --wait-aof`). "
              "Only for Redis 7.2 or later, or Valkey: Redis 7.0 refuses the whole file with it.")
def acl_cmd(generators: list[str], strategies: list[str], namespace: str, cluster: bool, wait_aof: bool) -> None:
    """Print a Redis ACL file (no passwords) with one user per role and instance: generator.NAME,
    strategy.NAME, trader, operator, admin; the default user is disabled.

    deploy/redis/render-acl.sh adds each user's password hash from a secrets folder. See
    docs/operations.md for what each user may do."""
    from .acl import render_acl
    click.echo(render_acl(namespace, generators, strategies, cluster=cluster, wait_aof=wait_aof), nl=False)


@cli.command("demo", context_settings=CONTEXT)
@click.option("--redis-url", default=DEFAULT_REDIS_URL, show_default=True, envvar="REDISMEDIAN_REDIS_URL",
              show_envvar=True, callback=_url,
              help="Redis to use. If none answers there, the demo starts a private one for you.")
@click.option("--namespace", default="redismedian-demo", show_default=True, callback=_namespace,
              help="Key prefix for the demo (kept apart from a real deployment's).")
@click.option("--period", default=2.0, show_default=True, callback=_period,
              help="Period in seconds (short, so that something happens while you watch).")
@click.option("--duration", type=float, default=None, callback=_seconds,
              help="Stop by itself after this many seconds [default: run until Ctrl-C].")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Least severe log level shown.")
def demo_cmd(redis_url: str, namespace: str, period: int, duration: float | None, log_level: str) -> None:
    """Run the original topology: generators g1, g2, g3; the trader; strategy X on g1 and strategy Y
    on g2,g3, each a child process with prefixed logs. The strategies start once every generator
    wrote a signal and the trader leads; the trader registers them at its next period boundary.
    Ctrl-C stops everything."""
    from .demo import run_demo
    sys.exit(run_demo(redis_url, namespace, period, duration, log_level))


@cli.command("web", context_settings=CONTEXT)
@click.option("--bind", default="127.0.0.1", show_default=True, envvar="REDISMEDIAN_WEB_BIND", show_envvar=True,
              help="Address to serve the page on. Any address but a loopback one (127.0.0.1, ::1, localhost) "
                   "needs a token (--token-file or $REDISMEDIAN_WEB_TOKEN) or an explicit --no-auth.")
@click.option("--port", type=int, default=8080, show_default=True, envvar="REDISMEDIAN_WEB_PORT", show_envvar=True,
              callback=_port, help="TCP port of the page (0: any free port, printed at start).")
@click.option("--token-file", metavar="FILE", envvar="REDISMEDIAN_WEB_TOKEN_FILE", show_envvar=True,
              help="Require the token in FILE (its last non-empty line; at least 16 characters): browsers log in "
                   "with it once, scripts send `Authorization: Bearer TOKEN`. $REDISMEDIAN_WEB_TOKEN works too.")
@click.option("--no-auth", is_flag=True,
              help="Serve the page on a non-loopback --bind without a token: anyone who can reach it reads it.")
@click.option("--socket-timeout", default=5.0, show_default=True, type=click.FloatRange(min=2.0),
              envvar="REDISMEDIAN_SOCKET_TIMEOUT", show_envvar=True,
              help="Longest wait for one Redis reply, in seconds (at least 2: the page blocks up to 1 s on the "
                   "medians stream).")
@click.option("--log-format", default="text", show_default=True, envvar="REDISMEDIAN_LOG_FORMAT", show_envvar=True,
              type=click.Choice(["text", "json"]), help="text: lines for people; json: one JSON object per line.")
@click.option("--log-level", default="INFO", show_default=True, envvar="REDISMEDIAN_LOG_LEVEL", show_envvar=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Least severe log level shown.")
@redis_options
def web_cmd(bind: str, port: int, token_file: str | None, no_auth: bool, socket_timeout: float, log_format: str,
            log_level: str, redis_url: str, namespace: str) -> None:
    """Serve a live, read-only page of the deployment: every part with its state and reason (the rules of
    `status` and `check`), the current median, a chart of the last hour with missed and error epochs as
    gaps, updated as they happen. One Redis reader per process, however many browsers; the `operator`
    user has every right it needs. /healthz answers like `check` (200 or 503). Needs the web extra:
    pip install 'redismedian[web]'."""
    from . import logs, web
    try:
        web.require_extra()
    except web.MissingExtra as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)
    try:
        access = web.access_rules(bind, web.load_token(token_file), no_auth)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    logs.setup(log_level, fmt=log_format, fields={"component": "web", "namespace": namespace})
    logs.add_secret(access.token)
    settings = _redis_settings(redis_url, socket_timeout)
    shown = redact_url(redis_url)

    def connect() -> redis.Redis:
        return make_client(settings, client_name="redismedian-web", namespace=namespace)
    probe = connect()
    try:
        probe.ping()
    except redis.exceptions.RedisError as e:
        # no retry fixes a refused password (or an ACL denial): say so now, like every component
        if classify(e) in (ErrorKind.AUTH, ErrorKind.PERMISSION):
            raise click.ClickException(_redis_problem(redis_url, e)) from None
        web.log.warning("%s; serving the page anyway (it says so, and recovers when Redis answers)",
                        _redis_problem(redis_url, e))
    finally:
        probe.close()
    try:
        sock = web.listen(bind, port)
    except OSError as e:
        raise click.ClickException(f"cannot serve the page on {bind}:{port}: {e.strerror or e}") from None
    state = web.WebState(shown, namespace)
    reader = web.Reader(state, connect, K.Keys.for_url(namespace, redis_url)).start()
    host, real_port = sock.getsockname()[:2]
    where = f"[{host}]" if ":" in host else host
    how = ("a token is required" if access.token else
           "no token: answers only to localhost" if access.local_only else
           "NO AUTHENTICATION (--no-auth): anyone who can reach it reads it")
    web.log.info("serving namespace %s of %s at http://%s:%d/ (%s)", namespace, shown, where, real_port, how)
    web.serve(sock, state, reader, access)


def main() -> None:
    cli(prog_name="redismedian")


def run_alone(command: str) -> None:
    """``python -m redismedian.generator`` (strategy, trader): that command on its own, its usage line
    naming the module.  Called from the component module's ``__main__`` block, the one place a
    component module imports this one."""
    cli.commands[command](prog_name=f"python -m redismedian.{command}")
