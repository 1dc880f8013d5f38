"""The one-hop floor for the end-to-end latency: a process that wakes at each period boundary the way
every component does, and makes one write.

It learns the Redis server's clock the components' way (``TIME`` at start, then the server time each
reply carries), sleeps until 1 ms after each boundary by that clock (``Component.next_epoch``), and
appends one entry to ``NS:bench:onehop`` with ``XADD *``.  The entry's id is the server's time when
the write landed, so (id ms - boundary) is the latency of one hop, on the same clock and with the same
1 ms resolution as the median's ``ts``: what the chain generator -> strategy -> trader is compared with.
It runs beside the components, in the same periods, so it also waits for the CPU at the boundary
like they do.

Run by benchmarks/latency.py with the components' environment (REDISMEDIAN_REDIS_URL,
REDISMEDIAN_NAMESPACE, REDISMEDIAN_PERIOD); stops on SIGTERM.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from redismedian.clock import ServerClock, boundary_ms
from redismedian.connection import make_client

STREAM = "bench:onehop"


def stream_key(namespace: str) -> str:
    return f"{namespace}:{STREAM}"


def main() -> int:
    url = os.environ["REDISMEDIAN_REDIS_URL"]
    key = stream_key(os.environ["REDISMEDIAN_NAMESPACE"])
    period_ms = int(round(float(os.environ["REDISMEDIAN_PERIOD"]) * 1000))
    client = make_client(url, 5.0, client_name="bench-onehop")
    clock = ServerClock()
    clock.sync(client)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    last = clock.now_ms() // period_ms
    while not stop.is_set():
        target = boundary_ms(last + 1, period_ms)
        # +1 ms, as every component: never wake a hair before the boundary by the server's clock
        if clock.wait(stop, (target - clock.now_ms() + 1) / 1000.0):
            break
        epoch = clock.now_ms() // period_ms
        if epoch <= last:
            continue
        entry = client.xadd(key, {"epoch": epoch}, maxlen=10_000, approximate=True)
        clock.observe(int(entry.split(b"-", 1)[0]))   # the server time the reply carries
        last = epoch
    return 0


if __name__ == "__main__":
    sys.exit(main())
