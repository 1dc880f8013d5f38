"""Settings, validation and plug-in loading shared by every component (no I/O)."""
from __future__ import annotations

import decimal
import importlib
import math
import numbers
import os
import random
import re
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from .connection import RedisSettings
from .keys import DEFAULT_NAMESPACE, Keys
from .text import shown

# \Z, not $: "$" also matches before a trailing newline, which would let "g1\n" through.
NAME_RE = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")
NAME_RULE = "1 to 64 characters: letters, digits, '_', '-' or '.'"

MIN_PERIOD_S = 0.05
MAX_PERIOD_S = 86_400.0

DEFAULT_PERIOD_S = 60.0

# Exit codes
EXIT_OK = 0
EXIT_FAILURE = 1   # a runtime refusal: name owned by a live process, wrong password, period mismatch
EXIT_USAGE = 2     # the command line is wrong


class FatalError(Exception):
    """An error no retry can fix; the process reports it in one line and exits."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"invalid {what} {name!r}: use {NAME_RULE}")
    return name


def check_namespace(ns: str) -> str:
    """Namespaces follow the same rule as component names."""
    return check_name(ns, "namespace")


def period_to_ms(period_s: float) -> int:
    """Validate a period in seconds and return it in whole milliseconds."""
    try:
        p = float(period_s)
    except (TypeError, ValueError):
        raise ValueError(f"invalid period {period_s!r}: give seconds as a number, e.g. 60 or 0.5") from None
    if not math.isfinite(p) or p < MIN_PERIOD_S or p > MAX_PERIOD_S:
        raise ValueError(f"invalid period {period_s!r}: must be between {MIN_PERIOD_S} and {MAX_PERIOD_S:.0f} seconds")
    return int(round(p * 1000))


def parse_name_list(text: str, what: str = "generator name") -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if not names:
        raise ValueError(f"give at least one {what}, separated by commas")
    for n in names:
        check_name(n, what)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what} listed twice: {', '.join(dupes)}")
    return names


def load_callable(spec: str) -> Callable[..., Any]:
    """Resolve ``module:function`` (ValueError with a clear message when it does not resolve)."""
    if not spec or ":" not in spec:
        raise ValueError(f"{spec!r} is not of the form module:function")
    mod_name, _, attr = spec.partition(":")
    # The current directory, as `python -m` has it: a console script does not, and a plug-in next
    # to where the operator runs the command would not be found.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # ImportError, or the module raising at import
        where = ""
        if isinstance(e, ModuleNotFoundError):   # say where it looked: the directory is the usual mistake
            where = (f"; looked in the current directory {cwd}, in PYTHONPATH and in the packages of "
                     f"{sys.executable}")
        raise ValueError(f"cannot import module {mod_name!r} ({type(e).__name__}: {e}){where}") from None
    obj: object = mod
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"module {mod_name!r} has no attribute {attr!r}")
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable")
    return obj


def new_owner_id() -> str:
    """Identify one process: host, pid and a random suffix (pids are reused across restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


def new_instance_id() -> str:
    return f"{random.getrandbits(64):016x}"


@dataclass
class Settings:
    """What every component needs: how to reach Redis, which namespace, which period."""

    # URL, credentials, TLS, timeouts: built once by the command line (its secrets never shown by repr).
    redis: RedisSettings = field(default_factory=RedisSettings)
    namespace: str = DEFAULT_NAMESPACE
    period_ms: int = int(DEFAULT_PERIOD_S * 1000)
    owner: str = field(default_factory=new_owner_id)

    @property
    def redis_url(self) -> str:
        return self.redis.url

    @property
    def socket_timeout(self) -> float:
        return self.redis.socket_timeout

    @property
    def keys(self) -> Keys:
        return Keys.for_url(self.namespace, self.redis_url)

    @property
    def period(self) -> float:
        return self.period_ms / 1000.0

    @property
    def backoff_cap(self) -> float:
        """Retries are capped at the smaller of the period and 5 s."""
        return min(self.period, 5.0)

    @property
    def block_ms(self) -> int:
        """Longest single blocking wait: short, so stop requests and hung servers are noticed fast,
        and always well inside the socket timeout."""
        return max(10, min(1000, self.period_ms // 2, int(self.socket_timeout * 500)))


def _short_repr(x: object, limit: int = 80) -> str:
    try:
        text = repr(x)
    except Exception:  # noqa: BLE001 - a plug-in's object may fail even at repr
        text = f"<{type(x).__name__} object>"
    return shown(text, limit)   # a plug-in's __repr__ may return anything


def plugin_error(what: str, exc: BaseException, limit: int = 500) -> str:
    """One line saying what a plug-in raised (its message may be huge, multi-line or broken)."""
    try:
        text = shown(" ".join(str(exc).split()), limit)   # escaped too: it is written into Redis and logged
    except Exception:  # noqa: BLE001
        text = "<message unavailable>"
    return f"{what} raised {shown(type(exc).__name__, 100)}: {text}"


def plugin_number(raw: object, what: str) -> tuple[str, str]:
    """What a plug-in returned, as (value text, "") for a finite real number, else ("", why).

    Real numbers (int, float, Fraction, numpy scalars) and Decimal are accepted; bools, strings
    and everything else are not numbers.  Never raises.
    """
    if type(raw) is float:      # the usual answer, judged without the ABC checks (same result)
        # repr(raw) is fmt_value(raw) for an exact float, without two calls (a replay makes millions)
        return (repr(raw), "") if math.isfinite(raw) else ("", f"{what} returned {raw!r}, not a finite number")
    if isinstance(raw, bool) or not isinstance(raw, (numbers.Real, decimal.Decimal)):
        return "", f"{what} returned {shown(type(raw).__name__, 100)} {_short_repr(raw)}, not a number"
    try:
        value = float(raw)
    except OverflowError:
        return "", f"{what} returned {_short_repr(raw)}, not a finite number"
    except Exception as e:  # noqa: BLE001 - e.g. signalling NaN, or a broken __float__
        return "", f"{what} returned {shown(type(raw).__name__, 100)} {_short_repr(raw)}, not a number ({shown(e)})"
    if not math.isfinite(value):
        return "", f"{what} returned {value!r}, not a finite number"
    return fmt_value(value), ""


def fmt_value(x: float) -> str:
    """The exact, shortest text of a float (what goes into Redis and the logs)."""
    return repr(float(x))


# The one number grammar for everything read from Redis (signals, decisions, period, epochs,
# fences): an optional sign, digits with at most one decimal point, an optional exponent.  Nothing
# else: no spaces, no underscores, no hex, no nan/inf; and finite as a double.  Integers (epochs,
# times, versions, fences) take no fraction and no exponent, and at most 15 digits (exact in a
# double, so the Lua reads the same value).  Mirrored by `num` and `int` in scripts.py's Lua
# prelude, and tested against the same table of cases (tests/unit/test_unit_numbers.py).
NUMBER_RE = re.compile(r"\A[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
INT_RE = re.compile(r"\A[+-]?[0-9]{1,15}\Z")
NUMBER_RULE = "a decimal number such as 12, -0.5 or 1.5e-3"


def parse_number(text: object) -> float | None:
    """A finite number written in the strict grammar, or None (garbage, NaN, inf, overflow, missing)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(text, str) or not NUMBER_RE.match(text):
        return None
    x = float(text)
    return x if math.isfinite(x) else None


def parse_period_ms(text: object) -> int | None:
    """The period in ``NS:meta``: a positive whole number of ms in the number grammar (``60000``,
    ``60000.0`` and ``6e4`` are the same period), else None.  The scripts' ``meta_check`` agrees."""
    p = parse_number(text)
    return int(p) if p is not None and p > 0 and p == int(p) else None


def parse_finite(text: object) -> float | None:
    """A finite float from Redis text (the strict grammar), or None for anything else."""
    return parse_number(text)


def parse_int(text: object) -> int | None:
    """An integer from Redis text: the strict grammar with no fraction and no exponent."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(text, str) or not INT_RE.match(text):
        return None
    return int(text)


def as_str(x: object) -> str:
    if x is None:
        return ""
    if isinstance(x, bytes):
        return x.decode(errors="replace")
    return str(x)
