"""A load generator that does, for N simulated strategies, exactly what a strategy process does.

Each simulated strategy makes the same single STRATEGY_REPORT call per period that
:meth:`redismedian.strategy.Strategy.report` makes (the keys and arguments come from the
same :func:`redismedian.strategy.report_request`, the script is the same), under its own
name, lease, decision hash and status hash.  Only the transport differs: the calls are
pipelined in chunks over one connection, so that one Python process can stand in for
100k strategy processes.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

from redismedian import keys as K
from redismedian.common import Settings, fmt_value, new_instance_id
from redismedian.connection import make_client
from redismedian.scripts import STRATEGY_REPORT
from redismedian.strategy import report_request

CHUNK = 2000   # script calls per pipeline round trip


@dataclass
class Submission:
    epoch: int
    seconds: float         # wall time to write every decision
    submitted: int         # decisions accepted for the epoch
    refused: dict          # reply status -> count, for anything but a submission
    round_trips: int       # pipelines sent
    commands: int          # STRATEGY_REPORT calls sent

    @property
    def rate(self) -> float:
        return self.submitted / self.seconds if self.seconds > 0 else float("nan")


class LoadGenerator:
    def __init__(self, redis_url: str, namespace: str, period_ms: int, names: list[str],
                 signals: str = "g1", seed: int = 1):
        self.settings = Settings(redis_url=redis_url, namespace=namespace, period_ms=period_ms)
        self.keys = self.settings.keys
        self.client = make_client(redis_url, socket_timeout=120.0, client_name="bench-loadgen")
        self.script = self.client.register_script(STRATEGY_REPORT)
        self.names = list(names)
        self.generators = signals.split(",")
        self.instance = ""
        self.fresh = new_instance_id()
        self.rng = random.Random(seed)

    def meta_args(self) -> list:
        return [self.settings.period_ms, self.instance, self.fresh, self.settings.owner,
                K.lease_ttl_ms(self.settings.period_ms)]

    def values(self) -> list[str]:
        return [fmt_value(self.rng.gauss(0.5, 0.2)) for _ in self.names]

    def submit(self, epoch: int, register: bool = False, with_values: bool = True) -> Submission:
        """One period's worth of reports for every simulated strategy (``register`` at start-up)."""
        names = list(self.names)
        self.rng.shuffle(names)   # strategies report in no particular order, a different one each period
        values = self.values() if with_values else [""] * len(names)
        state = "ok" if with_values else "starting"
        reason = "" if with_values else "registered, waiting for the next period"
        meta = self.meta_args()
        submitted, refused, trips = 0, {}, 0
        t0 = time.perf_counter()
        for lo in range(0, len(names), CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for name, value in zip(names[lo:lo + CHUNK], values[lo:lo + CHUNK]):
                keys, args = report_request(self.keys, name, self.generators, meta, self.settings.period_ms,
                                            epoch, value, state, reason, register)
                self.script(keys=keys, args=args, client=pipe)
            replies = pipe.execute()
            trips += 1
            for reply in replies:
                status = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
                if status == "ok" and (int(reply[4]) == 1 or not with_values):
                    submitted += 1
                    if not self.instance:
                        self.instance = reply[2].decode()
                else:
                    why = "late" if status == "ok" else status   # ok but not submitted: the epoch had ended
                    refused[why] = refused.get(why, 0) + 1
        seconds = time.perf_counter() - t0
        return Submission(epoch, seconds, submitted, refused, trips, len(self.names))

    def close(self) -> None:
        self.client.close()


def strategy_names(n: int, prefix: str = "L") -> list[str]:
    width = max(5, len(str(n)))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]
