"""Redis ACL users, one per role and instance, built from the key schema in keys.py.

``redismedian acl --generators g1,g2,g3 --strategies X,Y`` prints the file; the project's
``deploy/redis/users.acl`` is exactly that output for the original topology (a test keeps
them equal).  The file holds no password: ``deploy/redis/render-acl.sh`` adds the SHA-256
of each user's secret file when Redis starts.

The invariant these rules enforce (docs/guarantees.md, "Owned keys"): every key has one writer.

- A strategy writes only the keys that carry its own name (its lease and its decision); it reads
  the signals, the deployment record, and its own registration.  It may ring the doorbells shared
  by all strategies (``NS:count:<slot>`` INCR, an integer; ``PUBLISH`` on the ``NS:ready`` and
  ``NS:joins`` channels, which store nothing): the worst a hostile strategy can do with them is make
  the trader look early, or late (it then polls), and every such epoch is counted and shown.  It
  cannot read another strategy's decision.
- A generator writes only its own lease, signal hash and signal feed.
- The registry, its backup, the deregistration records, the deployment record, the trader's
  state, lease, fence, heartbeats, the medians and the events: only the trader and ``operator``.

How the rules are built (Redis 7 ACL, selectors and ``%R~`` read-only key patterns):

- The *root* permissions allow only connection housekeeping (PING, TIME, CLIENT SETNAME, SELECT,
  ACL WHOAMI) and ``EVALSHA`` of exactly the role's own scripts (``+evalsha|<sha1>``, one per
  script in ``scripts.ROLE_SCRIPTS``), with access to every key those scripts declare: Redis checks
  EVALSHA's declared keys as read-write.  No role may ``EVAL``, call or load a function, or run a
  script of its own choosing: a script that wrote and then looped would make Redis answer BUSY to
  everyone, with no way to stop it but SHUTDOWN NOSAVE.  The trader and the operator may
  ``SCRIPT LOAD`` (loading runs nothing), so that after a restart or a failover they load every
  role's scripts; generators and strategies wait for them.  The scripts are not what protects a
  key: the selectors are.
- Inside a script Redis checks every command again.  Each *selector* ``(...)`` grants the data
  commands a role uses on a group of keys, so a key is only ever touched with the commands meant
  for it: a strategy may ``SET`` its own decision but has no command at all on another
  strategy's key, and may only read (``%R~``) the signals.
"""
from __future__ import annotations

from .keys import Keys
from .scripts import LOADERS, ROLE_SCRIPTS, sha1

# Connection housekeeping: redis-py sends CLIENT SETNAME (our client names) and SELECT (db != 0);
# ACL WHOAMI names the user in the error a component gives when it may not act under a name.
BASE = "resetpass resetkeys resetchannels -@all +ping +time +client|setname +select +acl|whoami"
LOAD = "+script|load"
# On a Redis Cluster a client asks which master serves the namespace's hash slot (cluster.py).
CLUSTER = "+cluster|slots"
META_READ = "+type +hmget +hget"
META = META_READ + " +hset"
OWN = "+type +get +set +del +pexpire +pttl"


def user_name(kind: str, name: str | None = None) -> str:
    """The ACL user of a component: ``generator.g1``, ``strategy.X``, ``trader``, ``operator``, ``admin``."""
    return f"{kind}.{name}" if name else kind


def scripts(role: str) -> str:
    """EVALSHA of exactly the scripts ``role`` runs (scripts.ROLE_SCRIPTS), and SCRIPT LOAD for the
    roles that load them for everyone (scripts.LOADERS)."""
    rules = [f"+evalsha|{sha1(source)}" for source in ROLE_SCRIPTS[role]]
    return " ".join(rules + ([LOAD] if role in LOADERS else []))


def _keys(*patterns: str, read_only: bool = False) -> str:
    return " ".join(("%R~" if read_only else "~") + p for p in patterns)


def _line(user: str, *parts: str) -> str:
    return " ".join(["user", user, "on", BASE, *parts])


def generator_user(k: Keys, g: str) -> str:
    own = [k.signal(g), k.lease("generator", g)]
    return _line(user_name("generator", g), scripts("generator"),
                 _keys(k.meta, *own, k.signal_feed(g)),
                 f"({_keys(k.meta)} {META_READ})",
                 f"({_keys(*own)} {OWN} +hset +hgetall)",
                 f"({_keys(k.signal_feed(g))} +type +del +xadd)")


# The registry guard (scripts.py) runs in the trader's scripts and in `redismedian deregister`: it
# may restore a vanished or garbage registry from its backup (SUNIONSTORE, which replaces a key of
# any type), adopt an SREM into the backup, and record deregistrations.
REGISTRY_GUARD = "+type +scard +sismember +srandmember"
BACKUP = "+type +scard +sismember +sadd +srem +srandmember +smembers +del"
# Commands on both sets at once (a selector must match every key of a command).
BOTH = "+sunionstore +sdiff"
DEREGISTERED = "+type +hset +hget +hexists +hdel +hmget +del"


def _channels(k: Keys) -> str:
    """The doorbell channels (keys.ready_channel, keys.joins_channel): no key, no storage."""
    return f"&{k.ready_channel} &{k.joins_channel}"


def strategy_user(k: Keys, s: str) -> str:
    own = [k.lease("strategy", s), k.decision(s)]
    return _line(user_name("strategy", s), scripts("strategy"), "+publish", _channels(k),
                 _keys(k.meta, k.strategies, k.deregistered, *own, k.count("*")),
                 f"({_keys(k.meta)} {META_READ})",
                 f"({_keys(k.strategies)} +sismember +scard)",
                 f"({_keys(k.deregistered)} +hget)",
                 f"({_keys(*own)} {OWN})",
                 f"({_keys(k.count('*'))} +incr +pexpire)",
                 f"({_keys(k.signal('*'), k.signal_feed('*'), read_only=True)} +hmget +xread)")


# `trader --wait-aof`: WAITAOF exists on Redis 7.2+ and Valkey only, and Redis 7.0 refuses an ACL
# file that names a command it does not know (the whole file), so it is granted only when asked
# (`redismedian acl --wait-aof`); the shipped deploy/redis/users.acl loads on Redis 7.0.
WAITAOF = "+waitaof"


def trader_user(k: Keys, wait_aof: bool = False) -> str:
    own = [k.trader, k.medians, k.events, k.lease("trader"), k.trader_fence, k.settled, k.acted, k.traders, k.acks]
    # SUBSCRIBE: the doorbell channels (redismedian.bell); only the leader listens.
    return _line(user_name("trader"), scripts("trader"),
                 "+multi +exec +wait +subscribe +unsubscribe" + (f" {WAITAOF}" if wait_aof else ""), _channels(k),
                 _keys(k.meta, k.strategies, k.registry_backup, k.deregistered, k.count("*"),
                       k.lease("strategy", "*"), *own),
                 f"({_keys(k.meta)} {META})",
                 f"({_keys(k.strategies)} {REGISTRY_GUARD} +sadd)",
                 f"({_keys(k.registry_backup)} {BACKUP})",
                 f"({_keys(k.strategies, k.registry_backup)} {BOTH})",
                 f"({_keys(k.deregistered)} {DEREGISTERED})",
                 f"({_keys(*own)} {OWN} +incr +hset +hdel +hget +hgetall +xadd +xrange)",
                 f"({_keys(k.count('*'))} +get +del)",
                 f"({_keys(k.decision('*'), read_only=True)} +mget +getrange)",
                 # +mget: a missed epoch's reason says which strategies are still alive
                 # (trader.explain_missing reads their leases with one MGET)
                 f"({_keys(k.lease('strategy', '*'), read_only=True)} +type +pttl +get +mget +exists)")


def operator_user(k: Keys) -> str:
    """Reads everything in the namespace (status, check, history, redis-cli) and may deregister
    (`redismedian deregister` runs one script: registry, backup and the deregistration record), and
    create or repair the deployment record."""
    return _line(user_name("operator"), scripts("operator"),
                 _keys(k.meta, k.strategies, k.registry_backup, k.deregistered),
                 f"({_keys(k.pattern, read_only=True)} +@read -@dangerous)",
                 f"({_keys(k.meta)} {META} +hdel +del)",
                 f"({_keys(k.strategies)} {REGISTRY_GUARD} +srem)",
                 f"({_keys(k.registry_backup)} {BACKUP})",
                 f"({_keys(k.strategies, k.registry_backup)} {BOTH})",
                 f"({_keys(k.deregistered)} {DEREGISTERED})")


def render_acl(namespace: str, generators: list[str], strategies: list[str], cluster: bool = False,
               wait_aof: bool = False) -> str:
    """The ACL file (without passwords) for one namespace and topology; with ``cluster``, for a Redis
    Cluster: the ``{NS}:...`` key form, and every role may ask where the namespace's slot is.  Load
    the same file on every node of the cluster.  ``wait_aof``: the trader may send WAITAOF
    (Redis 7.2+ and Valkey only)."""
    k = Keys(namespace, cluster=cluster)
    roles = [operator_user(k), trader_user(k, wait_aof)]
    roles += [generator_user(k, g) for g in generators]
    roles += [strategy_user(k, s) for s in strategies]
    if cluster:
        roles = [line.replace(BASE, f"{BASE} {CLUSTER}", 1) for line in roles]
    lines = ["user default off resetpass resetkeys resetchannels -@all",
             "user admin on resetpass ~* &* +@all", *roles]
    return "\n".join(lines) + "\n"
