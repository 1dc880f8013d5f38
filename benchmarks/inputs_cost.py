"""What recording each median's inputs costs (``trader --record-inputs``, the default): the trader's
step per period and the bytes each published epoch keeps in NS:medians, with and without the record,
at the given sizes.  ``python -m benchmarks.inputs_cost 10000 50000`` (its own redis-server)."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from . import trader_cost
from .harness import BenchClock, RedisServer


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [10_000]
    server = RedisServer(Path(tempfile.mkdtemp(prefix="redismedian-inputs-")) / "redis").start()
    try:
        admin = server.client(socket_timeout=120)
        clock = BenchClock(admin)
        rate = trader_cost.calibrate(server.url, admin)
        for n in sizes:
            for record in (False, True):
                r = trader_cost.measure(server.url, admin, clock, n, 5, rate, log=lambda _m: None,
                                        record_inputs=record)
                stream = r["medians_stream_bytes"] / max(1, r["medians_entries"])
                print(f"N={n} record_inputs={record}: trader step p50 {r['trader_ms']['median']:.1f} ms "
                      f"(settle {r['breakdown_ms']['settle_ms']:.2f} ms), median entry {r['median_entry_bytes']} "
                      f"bytes of fields, NS:medians {stream:.0f} bytes per entry "
                      f"({r['medians_entries']} entries)", flush=True)
                admin.flushall()
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
