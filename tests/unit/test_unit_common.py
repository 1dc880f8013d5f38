"""Validation, parsing and plug-in loading (pure functions, no Redis)."""
import math

import pytest

from redismedian import keys as K
from redismedian.clock import ServerClock, boundary_ms, epoch_of, time_reply_ms
from redismedian.common import (NAME_RULE, Settings, check_name, check_namespace, fmt_value, load_callable,
                                parse_finite, parse_int, parse_name_list, period_to_ms)
from redismedian.connection import check_url, redact_url
from redismedian.keys import Keys
from tests.unit_support import FakeClock


# -- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["g1", "X", "a" * 64, "A-b_c.9", "-", ".", "_", "0"])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "a" * 65, "a b", "a:b", "a*", "a/b", "é", "a\n", "\na", "a\x00", "g1,g2",
                                  " g1", "g1 ", "{g1}", "a\tb"])
def test_invalid_names_say_what_is_allowed(name):
    with pytest.raises(ValueError) as e:
        check_name(name, "generator name")
    assert "generator name" in str(e.value) and NAME_RULE in str(e.value)


def test_non_string_name_is_refused():
    with pytest.raises(ValueError):
        check_name(None)


@pytest.mark.parametrize("ns", ["", "a b", "a:b", "x\n", "a" * 65])
def test_invalid_namespaces(ns):
    with pytest.raises(ValueError, match="invalid namespace"):
        check_namespace(ns)


def test_name_list_keeps_order_and_trims():
    assert parse_name_list(" g2, g1 ,g3") == ["g2", "g1", "g3"]
    assert parse_name_list("g1,,g2,") == ["g1", "g2"]


@pytest.mark.parametrize("text,msg", [("", "at least one"), (" , ", "at least one"), ("g1,g1", "listed twice"),
                                      ("g1,bad name", "invalid"), ("g1;g2", "invalid")])
def test_bad_name_lists(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_name_list(text)


# -- periods -------------------------------------------------------------------------------------
@pytest.mark.parametrize("given,ms", [(60, 60_000), ("0.5", 500), (0.05, 50), ("86400", 86_400_000), (1.2345, 1234)])
def test_periods(given, ms):
    assert period_to_ms(given) == ms


@pytest.mark.parametrize("given", ["abc", "", None, "nan", "inf", "-1", 0, 0.049, 86_401, "1e400"])
def test_bad_periods(given):
    with pytest.raises(ValueError, match="invalid period"):
        period_to_ms(given)


def test_backoff_cap_is_the_smaller_of_period_and_5s():
    assert Settings(period_ms=500).backoff_cap == 0.5
    assert Settings(period_ms=60_000).backoff_cap == 5.0
    assert Settings(period_ms=5_000).backoff_cap == 5.0


def test_settings_have_distinct_owners():
    assert Settings().owner != Settings().owner


# -- plug-ins ------------------------------------------------------------------------------------
def test_load_callable_resolves_module_functions():
    from tests import plugins
    assert load_callable("tests.plugins:sig_a") is plugins.sig_a
    assert load_callable("math:sqrt")(4) == 2
    assert load_callable("os.path:join")("a", "b") == "a/b"


@pytest.mark.parametrize("spec,msg", [
    ("tests.plugins", "module:function"),
    ("", "module:function"),
    ("no_such_module_xyz:f", "cannot import module"),
    ("tests.plugins:nope", "has no attribute"),
    ("tests.plugins:", "has no attribute"),
    (":sig_a", "cannot import module"),
    ("math:pi", "not callable"),
])
def test_unresolvable_plugins_are_clear_errors(spec, msg):
    with pytest.raises(ValueError, match=msg):
        load_callable(spec)


def test_plugin_module_raising_at_import_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin_mod.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="cannot import module 'broken_plugin_mod'.*boom at import"):
        load_callable("broken_plugin_mod:f")


# -- parsing what is in Redis --------------------------------------------------------------------
@pytest.mark.parametrize("raw,expect", [(b"1.5", 1.5), ("2", 2.0), (b"-0.25", -0.25), (b"1e3", 1000.0)])
def test_parse_finite_accepts_numbers(raw, expect):
    assert parse_finite(raw) == expect


@pytest.mark.parametrize("raw", [None, b"", b"nan", b"NaN", b"inf", b"-inf", b"abc", b"\xff\xfe", "1,5", b"1e400",
                                 "1_000", " 5 ", "0x10", "5\n", "1e", "+-1", "Infinity"])
def test_parse_finite_refuses_garbage(raw):
    assert parse_finite(raw) is None


@pytest.mark.parametrize("raw,expect", [(b"12", 12), ("-3", -3), (None, None), (b"1.5", None), (b"x", None),
                                        (b"\xff", None), ("1e3", None), ("12.0", None), (" 12", None), ("1_2", None),
                                        ("9" * 15, 10 ** 15 - 1), ("9" * 16, None)])
def test_parse_int(raw, expect):
    assert parse_int(raw) == expect


@pytest.mark.parametrize("x", [0.1, 1 / 3, 1e-300, 123456789.123456789, -2.5, 5e-324])
def test_fmt_value_round_trips(x):
    assert float(fmt_value(x)) == x


# -- URLs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "redis://127.0.0.1", "rediss://h:1/2",
                                 "redis://user:pw@h:1/0", "unix:///tmp/redis.sock", "redis://:pw@h"])
def test_good_urls(url):
    assert check_url(url) == url


@pytest.mark.parametrize("url,msg", [("http://h:1", "scheme"), ("localhost:6379", "scheme"), ("", "scheme"),
                                     ("redis://", "no host"), ("redis://h:99999", "invalid Redis URL"),
                                     ("redis://h:port", "invalid Redis URL"), ("redis://h/abc", "database"),
                                     ("unix://", "path")])
def test_bad_urls(url, msg):
    with pytest.raises(ValueError, match=msg):
        check_url(url)


def test_bad_url_message_never_shows_the_password():
    with pytest.raises(ValueError) as e:
        check_url("redis://u:s3cret@h:99999/0")
    assert "s3cret" not in str(e.value)


def test_redact_url():
    assert redact_url("redis://u:s3cret@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://:s3cret@h/0") == "redis://:***@h/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


# -- keys and time -------------------------------------------------------------------------------
def test_every_key_is_in_the_namespace():
    k = Keys("ns1")
    names = [k.meta, k.strategies, k.registry_backup, k.deregistered, k.traders, k.joins_channel,
             k.signal_feed("g"), k.trader, k.medians, k.trader_fence, k.signal("g"), k.decision("s"), k.count(7),
             k.ready_channel,
             k.lease("generator", "g"), k.lease("strategy", "s"), k.lease("trader")]
    assert all(n.startswith("ns1:") for n in names)
    assert len(set(names)) == len(names)
    assert k.name_from(k.signal("g1"), k.signal_pattern) == "g1"
    assert k.name_from(k.decision("X"), k.decision_pattern) == "X"
    with pytest.raises(ValueError):
        k.lease("nobody")


def test_the_shared_index_and_status_keys_are_gone():
    """A strategy owns its decision key; no shared per-epoch index, no per-strategy status hash."""
    k = Keys("ns1")
    for gone in ("decisions", "decisions_scratch", "strategy_status", "strategy_status_pattern"):
        assert not hasattr(k, gone), gone
    assert not hasattr(K, "STATUS_TTL_PERIODS")
    assert k.decision("X") == "ns1:decision:X" and k.count(7) == "ns1:count:3"
    # The shared doorbells that stored what any strategy pushed are channels now (redismedian.bell).
    assert not hasattr(k, "ready") and not hasattr(k, "joins")
    assert k.joins_channel == "ns1:joins" and k.ready_channel == "ns1:ready"
    assert k.other_doorbells(7) == ["ns1:count:0", "ns1:count:1", "ns1:count:2"]


def test_ttls():
    assert K.ttl_ms(60_000, 3) == 180_000
    assert K.ttl_ms(1, 0.1) == 1
    assert K.lease_ttl_ms(60_000) == 90_000
    assert K.lease_ttl_ms(50) == K.LEASE_MIN_TTL_MS


def test_epoch_math():
    assert epoch_of(0, 1000) == 0
    assert epoch_of(999, 1000) == 0
    assert epoch_of(1000, 1000) == 1
    assert epoch_of(1_700_000_000_123, 60_000) == 1_700_000_000_123 // 60_000
    assert boundary_ms(5, 60_000) == 300_000
    assert epoch_of(boundary_ms(123, 750), 750) == 123
    assert epoch_of(boundary_ms(123, 750) - 1, 750) == 122
    assert time_reply_ms((b"1700000000", b"123999")) == 1_700_000_000_123


def test_server_clock_learns_offset_from_replies():
    mono = [100.0]
    c = ServerClock(monotonic=lambda: mono[0])
    assert not c.synced
    with pytest.raises(RuntimeError):
        c.now_ms()
    c.observe(1_700_000_000_000, sent_at=99.0)   # reply took 1 s: server time is the midpoint
    assert c.synced
    assert c.now_ms() == 1_700_000_000_500
    mono[0] = 102.5
    assert c.now_ms() == 1_700_000_003_000


def test_fake_clock_waits_without_sleeping():
    import threading
    c = FakeClock(1_000_000)
    stop = threading.Event()
    assert c.wait(stop, 2.5) is False
    assert c.now_ms() == 1_002_500 and c.waits == [2.5]
    stop.set()
    assert c.wait(stop, 1) is True
    assert c.now_ms() == 1_002_500
    assert math.isclose(c.waits[-1], 1)
