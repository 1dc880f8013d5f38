"""Redis ACL users, one per role and instance, built from the key schema in keys.py.

``redismedian acl --generators g1,g2,g3 --strategies X,Y`` prints the file; the project's
``deploy/redis/users.acl`` is exactly that output for the original topology (a test keeps
them equal).  The file holds no password: ``deploy/redis/render-acl.sh`` adds the SHA-256
of each user's secret file when Redis starts.

How the rules are built (Redis 7 ACL, selectors and ``%R~`` read-only key patterns):

- The *root* permissions allow only connection housekeeping (PING, TIME, CLIENT SETNAME,
  SELECT) and running our scripts (EVALSHA, SCRIPT LOAD), with read-write access to every
  key those scripts declare: Redis checks EVALSHA's declared keys as read-write.
- Inside a script Redis checks every command again.  Each *selector* ``(...)`` grants the
  data commands a role uses on a group of keys, so a key is only ever touched with the
  commands meant for it: a strategy may ``HSET`` its own decision hash but has no command
  at all on another strategy's hash, and may only read (``%R~``) the signals.

Keys every instance of a role must write (``NS:meta``, the registry, the per-epoch decision
index and doorbell) are shared; each generator has its own signal feed: see docs/operations.md, "What the ACL
does and does not protect".
"""
from __future__ import annotations

from .keys import Keys

# Connection housekeeping: redis-py sends CLIENT SETNAME (our client names) and SELECT (db != 0).
BASE = "resetpass resetkeys resetchannels -@all +ping +time +client|setname +select"
SCRIPTS = "+evalsha +script|load"
META = "+type +hget +hmget +hset"


def user_name(kind: str, name: str | None = None) -> str:
    """The ACL user of a component: ``generator.g1``, ``strategy.X``, ``trader``, ``operator``, ``admin``."""
    return f"{kind}.{name}" if name else kind


def _keys(*patterns: str, read_only: bool = False) -> str:
    return " ".join(("%R~" if read_only else "~") + p for p in patterns)


def _line(user: str, *parts: str) -> str:
    return " ".join(["user", user, "on", BASE, *parts])


def generator_user(k: Keys, g: str) -> str:
    own = [k.signal(g), k.lease("generator", g)]
    return _line(user_name("generator", g), SCRIPTS,
                 _keys(k.meta, *own, k.signal_feed(g)),
                 f"({_keys(k.meta)} {META})",
                 f"({_keys(*own)} +type +get +set +del +pexpire +pttl +hset +hgetall)",
                 f"({_keys(k.signal_feed(g))} +type +del +xadd)")


def strategy_user(k: Keys, s: str) -> str:
    own = [k.lease("strategy", s), k.decision(s), k.strategy_status(s)]
    shared = [k.decisions("*"), k.ready("*")]
    return _line(user_name("strategy", s), SCRIPTS,
                 _keys(k.meta, k.strategies, *own, *shared),
                 f"({_keys(k.meta)} {META})",
                 f"({_keys(k.strategies)} +type +sismember +sadd +scard)",
                 f"({_keys(*own)} +type +get +set +del +pexpire +pttl +hset +hgetall)",
                 f"({_keys(*shared)} +type +del +zadd +zcard +pexpire +rpush)",
                 f"({_keys(k.signal('*'), k.signal_feed('*'), read_only=True)} +hmget +xread)")


def trader_user(k: Keys) -> str:
    own = [k.trader, k.medians, k.lease("trader"), k.trader_fence, k.ready("*")]
    return _line(user_name("trader"), SCRIPTS,
                 _keys(k.meta, k.strategies, k.decisions("*"), *own),
                 f"({_keys(k.meta)} {META})",
                 f"({_keys(*own)} +type +get +set +del +pexpire +pttl +incr +hset +hdel +hget +hgetall +xadd +blpop)",
                 f"({_keys(k.decisions('*'))} {_keys(k.strategies, read_only=True)} "
                 "+type +scard +zcard +zintercard +zdiff +zinterstore +zrange +del +pexpire)",
                 f"({_keys(k.strategy_status('*'), read_only=True)} +type +hmget)")


def operator_user(k: Keys) -> str:
    """Reads everything in the namespace (status, check, history, redis-cli) and may deregister."""
    return _line(user_name("operator"),
                 f"({_keys(k.ns + ':*', read_only=True)} +@read -@dangerous)",
                 f"({_keys(k.strategies)} +srem)")


def render_acl(namespace: str, generators: list[str], strategies: list[str]) -> str:
    """The ACL file (without passwords) for one namespace and topology."""
    k = Keys(namespace)
    lines = ["user default off resetpass resetkeys resetchannels -@all",
             "user admin on resetpass ~* &* +@all",
             operator_user(k),
             trader_user(k)]
    lines += [generator_user(k, g) for g in generators]
    lines += [strategy_user(k, s) for s in strategies]
    return "\n".join(lines) + "\n"
