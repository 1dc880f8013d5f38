"""The ``redismedian`` command line: a thin click layer over the components."""
from __future__ import annotations

import math
import sys
from typing import Callable

import click

from . import keys as K
from .common import (DEFAULT_PERIOD_S, DEFAULT_REDIS_URL, EXIT_FAILURE, NAME_RULE, FatalError, Settings,
                     check_name, check_namespace, load_callable, parse_name_list, period_to_ms)
from .connection import check_url, describe_error, is_auth_error, make_client, redact_url

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# -- option callbacks: every mistake is a usage error (exit 2) that says what is allowed ----
def _validator(check: Callable) -> Callable:
    """A click callback running ``check`` on the value; its ValueError becomes a usage error."""
    def callback(ctx, param, value):
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


def _seconds(ctx, param, value):
    # "inf" parses as a float: refuse it here (it used to end in an OverflowError traceback)
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise click.BadParameter("must be a positive, finite number of seconds")
    return value


def redis_options(f: Callable) -> Callable:
    f = click.option("--namespace", default=K.DEFAULT_NAMESPACE, show_default=True, envvar="REDISMEDIAN_NAMESPACE",
                     show_envvar=True, callback=_namespace,
                     help="Prefix of every key, so several deployments can share one Redis.")(f)
    f = click.option("--redis-url", default=DEFAULT_REDIS_URL, show_default=True, envvar="REDISMEDIAN_REDIS_URL",
                     show_envvar=True, callback=_url,
                     help="Redis to coordinate through: redis://[user:password@]host:port/db, rediss:// "
                          "for TLS, or unix:///path.sock.")(f)
    return f


def component_options(f: Callable) -> Callable:
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
    return Settings(redis_url=redis_url, namespace=namespace, period_ms=period, socket_timeout=socket_timeout)


def _timeout_ms(value: float | None, period_ms: int, option: str) -> int | None:
    if value is None:
        return None
    ms = int(round(value * 1000))
    if not 0 < ms < period_ms:
        raise click.UsageError(f"{option} must be shorter than the period ({period_ms / 1000:g}s), got {value:g}s")
    return ms


def _run(component, log_level: str) -> None:
    from . import logs
    from .component import install_signal_handlers
    logs.setup(log_level)
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
              callback=_plugin, help="module:function called with the epoch number (int), returning the signal "
                                     "(a finite float). The default is uniform random in [0, 1).")
@component_options
def generator_cmd(name, signal_fn, redis_url, namespace, period, socket_timeout, log_level):
    """Compute a signal once per period and write it, timestamped, into Redis."""
    from .generator import Generator
    _run(Generator(_settings(redis_url, namespace, period, socket_timeout), name=name, signal_fn=signal_fn),
         log_level)


@cli.command("strategy", context_settings=CONTEXT)
@click.option("-n", "--name", required=True, callback=_name, help=f"Strategy name ({NAME_RULE}).")
@click.option("--signals", required=True, callback=_names,
              help="Comma-separated generator names whose signals this strategy reads, e.g. g2,g3.")
@click.option("--decide", "decide_fn", default="redismedian.strategy:default_decide", show_default=True,
              callback=_plugin, help="module:function called with {generator: value} (in --signals order), "
                                     "returning the decision (a finite float). The default is the mean.")
@click.option("--signal-timeout", type=float, default=None, callback=_seconds,
              help="Seconds after the period starts to wait for all signals before reporting an error "
                   "[default: half the period].")
@component_options
def strategy_cmd(name, signals, decide_fn, signal_timeout, redis_url, namespace, period, socket_timeout,
                 log_level):
    """Register, then each period read the signals, decide, and submit the decision."""
    from .strategy import Strategy
    _run(Strategy(_settings(redis_url, namespace, period, socket_timeout), name=name, generators=signals,
                  decide_fn=decide_fn, signal_timeout_ms=_timeout_ms(signal_timeout, period, "--signal-timeout")),
         log_level)


@cli.command("trader", context_settings=CONTEXT)
@click.option("--decision-timeout", type=float, default=None, callback=_seconds,
              help="Seconds after the period starts by which every registered strategy must have submitted; "
                   "later, the trader enters the error state for that period [default: 80% of the period].")
@click.option("--medians-maxlen", type=click.IntRange(min=1), default=K.DEFAULT_MEDIANS_MAXLEN,
              show_default=True, help="Approximate number of entries kept in the medians stream.")
@component_options
def trader_cmd(decision_timeout, medians_maxlen, redis_url, namespace, period, socket_timeout, log_level):
    """Check every period that all registered strategies submitted, and publish their median."""
    from .trader import Trader
    _run(Trader(_settings(redis_url, namespace, period, socket_timeout),
                decision_timeout_ms=_timeout_ms(decision_timeout, period, "--decision-timeout"),
                medians_maxlen=medians_maxlen), log_level)


def _operator_client(redis_url: str):
    """A client for one-shot operator commands: fail fast with one line instead of retrying."""
    client = make_client(redis_url, socket_timeout=5.0)
    try:
        client.ping()
    except Exception as e:  # noqa: BLE001 - reported in one line
        what = "refused our credentials" if is_auth_error(e) else "is not reachable"
        raise click.ClickException(f"Redis at {redact_url(redis_url)} {what}: {describe_error(e)}") from None
    return client


@cli.command("deregister", context_settings=CONTEXT)
@click.argument("name", required=False, callback=_name)
@click.option("-n", "--name", "name_opt", callback=_name, help="Strategy to deregister (same as the argument).")
@redis_options
def deregister_cmd(name, name_opt, redis_url, namespace):
    """Deregister strategy NAME so the trader stops waiting for it.

    Exactly the same as `redis-cli SREM NAMESPACE:strategies NAME`. A running strategy of
    that name notices, stops submitting and exits."""
    from .status import deregister
    if name and name_opt and name != name_opt:
        raise click.UsageError(f"two different names given: {name!r} and {name_opt!r}")
    name = name or name_opt
    if not name:
        raise click.UsageError("give the strategy name: redismedian deregister NAME (or -n NAME)")
    client = _operator_client(redis_url)
    try:
        deregister(client, K.Keys(namespace), name)
    except FatalError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"deregistered {name}")


@cli.command("status", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")
@redis_options
def status_cmd(as_json, redis_url, namespace):
    """Show every generator, strategy and the trader: state, last value, epoch, age, and why a part
    is in error."""
    from .status import gather, render, to_json
    client = _operator_client(redis_url)
    data = gather(client, K.Keys(namespace))
    click.echo(to_json(data) if as_json else render(data, redact_url(redis_url)))


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
def demo_cmd(redis_url, namespace, period, duration, log_level):
    """Run the original topology: generators g1, g2, g3; the trader; strategy X on g1 and strategy Y
    on g2,g3, each a child process with prefixed logs. Ctrl-C stops everything."""
    from .demo import run_demo
    sys.exit(run_demo(redis_url, namespace, period, duration, log_level))


def main() -> None:
    cli(prog_name="redismedian")


# `python -m redismedian.generator` and friends: the same commands on their own.
def generator_command(prog_name: str) -> None:
    generator_cmd(prog_name=prog_name)


def strategy_command(prog_name: str) -> None:
    strategy_cmd(prog_name=prog_name)


def trader_command(prog_name: str) -> None:
    trader_cmd(prog_name=prog_name)
