"""Typed views of the stream replies this package reads.

redis-py annotates each command with the union of every shape its reply can take (RESP2, RESP3,
async).  Our clients speak RESP2 (connection.client_settings), so each reply has one shape, named
here once instead of being narrowed at every call.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, cast

import redis

if TYPE_CHECKING:
    from redis.typing import KeyT, StreamIdT

# One stream entry: (id, fields); the fields are None for an entry deleted under a pending read.
StreamEntry = Tuple[Any, Optional[Dict[Any, Any]]]
# XREAD: [[stream key, [entry, ...]], ...], or None when nothing came before the block ran out.
XReadReply = List[Tuple[Any, List[StreamEntry]]]


def xread(client: redis.Redis, streams: Mapping[str, str], *, count: int, block: int) -> XReadReply | None:
    """``XREAD COUNT count BLOCK block STREAMS ...`` from the ids in ``streams``."""
    ids: dict[KeyT, StreamIdT] = {k: v for k, v in streams.items()}
    return cast("XReadReply | None", client.xread(ids, count=count, block=block))


def xrevrange(client: redis.Redis, key: str, max: str = "+", min: str = "-",
              count: int | None = None) -> list[StreamEntry]:
    """``XREVRANGE key max min [COUNT count]``: newest first."""
    return cast("list[StreamEntry]", client.xrevrange(key, max=max, min=min, count=count))


def xrange(client: redis.Redis, key: str, min: str = "-", max: str = "+",
           count: int | None = None) -> list[StreamEntry]:
    """``XRANGE key min max [COUNT count]``: oldest first."""
    return cast("list[StreamEntry]", client.xrange(key, min=min, max=max, count=count))
