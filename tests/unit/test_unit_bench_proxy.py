"""The benchmarks' counting proxy never blocks its one thread on a stale readiness event.

A select batch can hold a server reply and, after it, a "client readable" event for the same link:
handling the reply takes in what the client sent (same batch of commands), so by the time the client
event is handled there is nothing left to read.  A blocking read there stalled every proxied process
until that client sent again (a benchmark smoke run under load saw the whole pipeline stop for two
periods and every generator at 0 round trips).
"""
import socket
import threading
from collections import Counter

from benchmarks.harness import CountingProxy, _Link


def _link():
    client_near, client_far = socket.socketpair()      # far end: the component
    upstream_near, upstream_far = socket.socketpair()  # far end: Redis
    for s in (client_near, upstream_near):
        s.setblocking(True)                            # as _accept leaves them
    return _Link("g1", client_near, upstream_near), client_far, upstream_far


def _returns_within(fn, seconds=2.0) -> bool:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive()


def test_a_stale_client_event_returns_at_once_and_the_batch_is_counted_once():
    proxy = CountingProxy(upstream_port=1)   # never started: the test drives its events itself
    proxy.counts["g1"], proxy.trips["g1"] = Counter(), 0
    link, component, redis_side = _link()
    try:
        # The component sends a command, the proxy forwards it and counts one round trip.
        component.sendall(b"*1\r\n$4\r\nPING\r\n")
        proxy._dispatch(link.client, ("client", link))
        assert redis_side.recv(100) == b"*1\r\n$4\r\nPING\r\n"
        # Before the reply is forwarded the component already sent its next command: the reply
        # handler takes it in (same batch) ...
        component.sendall(b"*1\r\n$4\r\nPING\r\n")
        redis_side.sendall(b"+PONG\r\n")
        proxy._dispatch(link.upstream, ("server", link))
        assert component.recv(100) == b"+PONG\r\n"
        # ... so the client event that the same select reported is stale: nothing to read, and it
        # must not wait for the component's next command.
        assert _returns_within(lambda: proxy._dispatch(link.client, ("client", link))), \
            "the proxy blocked on a stale readiness event"
        # A stale server event does not block either.
        assert _returns_within(lambda: proxy._dispatch(link.upstream, ("server", link)))
        trips, counts = proxy.snapshot()["g1"]
        assert trips == 1 and counts["PING"] == 2
    finally:
        for s in (link.client, link.upstream, component, redis_side):
            s.close()
        proxy.sel.close()
