"""Shift this process's wall clock by $REDISMEDIAN_TEST_CLOCK_OFFSET seconds (fault tests).

Put this folder first on PYTHONPATH and Python imports it at start-up: ``time.time()`` and
``time.time_ns()`` (and so logging's timestamps and anything built on them) are then off by the
offset, like a machine whose clock was never synchronised.  The monotonic clock is untouched,
as it is on such a machine.
"""
import os
import time

_offset = float(os.environ.get("REDISMEDIAN_TEST_CLOCK_OFFSET", "0") or 0)
if _offset:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _offset
    time.time_ns = lambda: _time_ns() + int(_offset * 1e9)
