"""The trader's doorbells (redismedian.bell): what a message means (Inbox, pure), and the
subscription's I/O: lost, said once, taken again; reconnected by redis-py under it."""
import logging

import fakeredis
import redis

from redismedian.bell import RESUBSCRIBE_S, Inbox, Subscription
from redismedian.keys import JOINS_PER_TICK, Keys

K = Keys("t")


def test_a_ring_is_an_epochs_number_and_a_request_a_valid_name():
    box = Inbox(K)
    for channel, data in [("t:ready", b"480001"), ("t:ready", b"garbage"), ("t:ready", b"-1"), ("t:ready", b""),
                          ("t:ready", b"9" * 21), ("t:ready", "480002\n".encode()), ("t:joins", b"X"),
                          ("t:joins", b"X"), ("t:joins", b"bad name!"), ("t:joins", b"Z" * 65),
                          ("t:joins", "\x1b[31mY".encode()), ("t:joins", b"Y"), ("elsewhere", b"W")]:
        box.take(channel, data)
    assert box.rung(480001) and not box.rung(480002) and box.rang == {480001}
    assert box.take_joins() == (["X", "Y"], 6)
    assert box.take_joins() == ([], 0)
    assert box.junk == 8


def test_requests_are_capped_and_forged_rings_kept_few():
    box = Inbox(K)
    for i in range(JOINS_PER_TICK + 500):
        box.take(b"t:joins", f"n{i}".encode())
    names, asked = box.take_joins()
    assert len(names) == JOINS_PER_TICK and asked == JOINS_PER_TICK + 500
    for e in range(1000):
        box.take(b"t:ready", str(e).encode())
    assert len(box.rang) <= 64 and box.rung(999)


class _Refusing:
    def __init__(self):
        self.calls = 0

    def pubsub(self, **kw):
        self.calls += 1
        raise redis.exceptions.ConnectionError("Connection refused")


def test_a_subscription_that_cannot_be_made_is_said_once_and_tried_again_later(caplog):
    now = [100.0]
    client = _Refusing()
    sub = Subscription(client, K, logging.getLogger("t"), monotonic=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        assert not sub.ensure() and not sub.up
        assert sub.wait(7, 5.0) is False and now[0] == 100.0, "no subscription: no waiting (the trader polls)"
        sub.drain()
        assert client.calls == 1, "at most one attempt per RESUBSCRIBE_S"
        now[0] += RESUBSCRIBE_S
        assert not sub.ensure() and client.calls == 2
    said = [r.getMessage() for r in caplog.records if "doorbell subscription" in r.getMessage()]
    assert len(said) == 1 and "polling" in said[0] and "Connection refused" in said[0]


def test_a_subscription_reconnected_under_us_ends_the_wait_and_is_said(caplog):
    r = fakeredis.FakeRedis()
    now = [100.0]
    sub = Subscription(r, K, logging.getLogger("t"), monotonic=lambda: now[0])
    assert sub.ensure() and sub.heard_since(100.0) and not sub.heard_since(99.0)
    r.publish("t:ready", "7")
    assert sub.wait(7, 1.0)
    with caplog.at_level(logging.WARNING):
        now[0] = 101.0
        sub._reconnected(None)              # what redis-py calls when it connected again by itself
        sub._reconnected(None)
    assert sub.since == 101.0 and sub.losses == 2 and not sub.heard_since(100.5)
    said = [m for m in caplog.messages if "was closed and taken again" in m]
    assert len(said) == 1, said
    sub.close()
    assert not sub.up


def test_a_flood_of_made_up_names_cannot_keep_a_real_one_out_for_good():
    """The requests taken per period are a uniform sample of the valid names heard: X, asking once a
    period among 10 times as many made-up names as are taken, gets in within a few periods."""
    box = Inbox(K, joins_cap=100)
    periods = []
    for trial in range(20):
        for period in range(1, 200):
            for i in range(500):
                box.take(b"t:joins", f"junk{i}".encode())
            box.take(b"t:joins", b"X")
            for i in range(500, 1000):
                box.take(b"t:joins", f"junk{i}".encode())
            names, asked = box.take_joins()
            assert len(names) == 100 and len(set(names)) == 100 and asked == 1001
            if "X" in names:
                periods.append(period)
                break
    assert len(periods) == 20, "X got in in every trial"
    assert sorted(periods)[10] <= 20, periods       # about 1 in 10 per period: median ~7


def test_a_closed_subscription_leaves_no_callback_on_the_pooled_connection(caplog):
    """Closing hands the connection back to the client's pool: the next plain command that
    connects it again (the lease release at a stop, a standby's next read) is no lost subscription.
    (Every demo stop logged "the doorbell subscription ... was closed and taken again".)"""
    r = fakeredis.FakeRedis(single_connection_client=False)
    sub = Subscription(r, K, logging.getLogger("t"))
    assert sub.ensure()
    conn = sub.pubsub.connection
    with caplog.at_level(logging.WARNING):
        sub.close()
        pooled = r.connection_pool.get_connection()
        assert pooled is conn, "the subscription's connection is the one the pool hands out next"
        pooled.connect()                     # connects it again: runs its connect callbacks
        r.connection_pool.release(pooled)
        assert r.ping()
    assert sub.losses == 0 and not [m for m in caplog.messages if "taken again" in m], caplog.messages
