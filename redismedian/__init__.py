"""redismedian: a minute-cadence trading pipeline coordinated through one Redis."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from .following import Event, Median
    from .replaying import Replayed

__version__ = "0.1.0"


def follow(redis_url: str = "redis://localhost:6379/0", namespace: str = "redismedian", since: str | None = None,
           **kw: Any) -> Iterator[Median | Event]:
    """Iterate over every median as it is published (and every epoch that was not): see
    :mod:`redismedian.following`."""
    from .following import follow as _follow
    return _follow(redis_url, namespace, since, **kw)


def replay(topology: Any, signals: Any, **kw: Any) -> Iterator[Replayed]:
    """Replay a topology (a TOML file's path, or a :class:`redismedian.replaying.Topology`) over
    recorded signals (a CSV file's path, or (epoch, generator, value[, status[, error]]) rows in epoch
    order): one :class:`redismedian.replaying.Replayed` per epoch.  See :mod:`redismedian.replaying`."""
    from .replaying import replay as _replay
    return _replay(topology, signals, **kw)
