"""connection.py's two single sources: what an error means (classify) and how a URL is shown (redact_url)."""
import pytest
import redis
from redis.sentinel import MasterNotFoundError, SlaveNotFoundError

from redismedian.cluster import NotACluster
from redismedian.connection import ErrorKind, check_url, classify, redact_url, redis_problem, wrong_mode

T, A, P, D, F = ErrorKind.TRANSIENT, ErrorKind.AUTH, ErrorKind.PERMISSION, ErrorKind.DATA, ErrorKind.FATAL
E = redis.exceptions

# A Sentinel deployment whose every sentinel refused our password (redis-py folds their errors into the text).
SENTINELS_REFUSED = MasterNotFoundError(
    "No master found for 's' : sentinel 127.0.0.1:1 - AuthenticationError('invalid username-password pair'), "
    "sentinel 127.0.0.1:2 - ResponseError('WRONGPASS invalid username-password pair')")


@pytest.mark.parametrize("exc,kind", [
    # transient: retried with backoff
    (E.ConnectionError("Error 111 connecting"), T), (E.TimeoutError("Timeout reading"), T),
    (E.BusyLoadingError("LOADING"), T), (E.ReadOnlyError("READONLY replica"), T), (E.TryAgainError("TRYAGAIN"), T),
    (E.ClusterDownError("CLUSTERDOWN"), T), (MasterNotFoundError("No master found for 's'"), T),
    (SlaveNotFoundError("no replica"), T), (ConnectionResetError(), T), (TimeoutError(), T),
    # auth: by type, and by text where the type is missing
    (E.AuthenticationError("invalid password"), A),
    (E.AuthenticationWrongNumberOfArgsError("wrong number of arguments for 'auth' command"), A),
    (E.ResponseError("WRONGPASS invalid username-password pair"), A), (E.ResponseError("NOAUTH required."), A),
    (SENTINELS_REFUSED, A),
    # permission: one decision, never "auth" as well
    (E.NoPermissionError("this user has no permissions to run the 'evalsha' command"), P),
    (E.ResponseError("NOPERM User x has no permissions"), P),
    (E.ResponseError("ERR Error running script: @user_script:12: The user executing the script can't access"), P),
    (E.ResponseError("ACL failure in script: No permissions to access a key script: on @user_script:45."), P),
    # data: Redis answered this call with an error
    (E.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), D),
    (E.ResponseError("ERR Error running script: bad argument"), D), (E.NoScriptError("NOSCRIPT"), D),
    # fatal: a URL of the wrong mode, or not Redis' at all
    (NotACluster("h:1 is not a Redis Cluster node"), F), (E.MovedError("3999 127.0.0.1:7001"), F),
    (E.AskError("3999 127.0.0.1:7001"), F), (E.ClusterCrossSlotError("CROSSSLOT"), F),
    (E.DataError("Invalid input"), F), (KeyError("bug"), F), (ValueError("bug"), F),
])
def test_classify_makes_one_decision(exc, kind):
    assert classify(exc) is kind


def test_a_sentinel_outage_is_not_an_auth_failure():
    partly = MasterNotFoundError("No master found for 's' : sentinel 127.0.0.1:1 - AuthenticationError('x'), "
                                 "sentinel 127.0.0.1:2 - ConnectionError('Error 111')")
    assert classify(partly) is T


@pytest.mark.parametrize("exc,what", [
    (E.AuthenticationError("invalid password"), "refused our credentials"),
    (E.NoPermissionError("no permissions to run 'evalsha'"), "denied a command to this user (check its ACL)"),
    (E.ConnectionError("Error 111"), "is not reachable"),
    (E.ResponseError("WRONGTYPE Operation"), "answered with an error"),
])
def test_redis_problem_words_each_kind_in_one_line(exc, what):
    line = redis_problem("redis://u:s3cret@h:1/0", exc)
    assert line.startswith("Redis at redis://u:***@h:1/0 " + what) and "s3cret" not in line


def test_wrong_mode_needs_the_url_only_for_its_words():
    moved = E.MovedError("3999 127.0.0.1:7001")
    assert "use a redis+cluster://" in (wrong_mode(moved, "redis://:pw@h:1/0") or "")
    assert "pw" not in (wrong_mode(moved, "redis://:pw@h:1/0") or "")
    assert redis_problem("redis://h:1/0", moved) == wrong_mode(moved, "redis://h:1/0")
    assert wrong_mode(E.ConnectionError("x"), "redis://h:1/0") is None


@pytest.mark.parametrize("url,shown", [
    ("redis://u:s3cret@h:1/0", "redis://u:***@h:1/0"),
    ("rediss://:s3cret@h/0", "rediss://:***@h/0"),
    ("redis://h:1/0", "redis://h:1/0"),
    ("redis://strategy.X@h:1/0", "redis://strategy.X@h:1/0"),            # a user name alone is no secret
    ("redis://h/0?password=s3cret&db=2", "redis://h/0?password=***&db=2"),
    ("redis://h/0?db=2&PASSWORD=s3cret#x", "redis://h/0?db=2&PASSWORD=***#x"),
    ("unix:///run/redis.sock?password=s3cret", "unix:///run/redis.sock?password=***"),
    ("redis://u:p@ss@h/0", "redis://u:***@h/0"),                         # an '@' in the password
    ("redis://u:s3cret@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
    ("redis://u:s3cret@[::1:6379/0", "redis://u:***@[::1:6379/0"),      # unparsable, still redacted
    ("redis+sentinel://u:s3cret@h1:1,h2:2/s", "redis+sentinel://u:***@h1:1,h2:2/s"),
    ("redis+sentinel://:s3cret@h1:1/s/2", "redis+sentinel://:***@h1:1/s/2"),
    ("redis+sentinel://app@h1:1/s", "redis+sentinel://app@h1:1/s"),
    ("redis+cluster://u:s3cret@h1:1,h2:2", "redis+cluster://u:***@h1:1,h2:2"),
    ("rediss+cluster://:s3cret@h1:1", "rediss+cluster://:***@h1:1"),
    ("u:s3cret@h:1", "u:***@h:1"),                                       # no scheme: still no password
    ("", ""),
])
def test_one_redactor_for_every_url_form(url, shown):
    assert redact_url(url) == shown
    assert redact_url(shown) == shown


@pytest.mark.parametrize("url,why", [
    ("redis+sentinel://u:s3cret@h1:1", "service name"),
    ("redis+sentinel://u:s3cret@h1:x/s", "bad port"),
    ("redis+cluster://u:s3cret@h1:1/3", "only database 0"),
    ("rediss+cluster://u:s3cret@:1", "bad node address"),
])
def test_sentinel_and_cluster_url_errors_name_the_url_redacted(url, why):
    with pytest.raises(ValueError) as e:
        check_url(url)
    text = str(e.value)
    assert text.startswith(f"invalid Redis URL {redact_url(url)!r}: ") and why in text and "s3cret" not in text


# -- the readers sort with classify too ---------------------------------------------------------
@pytest.mark.parametrize("fatal", [E.AuthenticationError("invalid password"),
                                   E.NoPermissionError("no permissions to run 'xread'"),
                                   E.ResponseError("ERR unknown command")])
def test_follow_waits_out_an_outage_and_a_replaced_stream_but_not_a_refusal(monkeypatch, fatal):
    import fakeredis

    from redismedian import following
    raised = [E.ConnectionError("Error 111"), E.ResponseError("WRONGTYPE Operation against a key"), fatal]

    def xread(client, ids, **kw):
        raise raised.pop(0)
    monkeypatch.setattr(following, "xread", xread)
    items = following.follow("redis://h:1/0", "t", client=fakeredis.FakeRedis())
    with pytest.raises(type(fatal)):
        next(items)
    assert raised == [], "the outage and the replaced stream were waited out; the refusal was raised"


def test_a_connection_found_not_ready_right_after_connecting_is_asked_for_again(monkeypatch):
    """Over TLS 1.3 redis-py's pool can take the session tickets that follow the handshake for unread
    data and give up ("Connection not ready"): our pool asks again, twice at most; other errors pass."""
    import redis
    from redismedian.connection import ReadyPool, make_client
    calls = []

    def flaky(self, *a, **kw):
        calls.append(a)
        if len(calls) < 3:
            raise redis.exceptions.ConnectionError("Connection not ready")
        return "conn"
    monkeypatch.setattr(redis.ConnectionPool, "get_connection", flaky)
    client = make_client("redis://127.0.0.1:1/0")
    assert isinstance(client.connection_pool, ReadyPool) and type(client) is redis.Redis
    assert client.connection_pool.get_connection() == "conn" and len(calls) == 3
    calls.clear()
    monkeypatch.setattr(redis.ConnectionPool, "get_connection",
                        lambda self, *a, **kw: calls.append(a) or (_ for _ in ()).throw(
                            redis.exceptions.ConnectionError("Connection not ready")))
    with pytest.raises(redis.exceptions.ConnectionError, match="not ready"):
        client.connection_pool.get_connection()
    assert len(calls) == 3
    calls.clear()
    monkeypatch.setattr(redis.ConnectionPool, "get_connection",
                        lambda self, *a, **kw: calls.append(a) or (_ for _ in ()).throw(
                            redis.exceptions.ConnectionError("Error 111 connecting")))
    with pytest.raises(redis.exceptions.ConnectionError, match="111"):
        client.connection_pool.get_connection()
    assert len(calls) == 1, "a refused connection is not asked for again here (the components' loops retry)"


def test_a_fresh_tls_connection_readable_without_a_reply_is_drained_not_dropped(monkeypatch):
    """A TLS 1.3 server's session tickets make a fresh connection's socket readable with no reply in it:
    our pool reads it once briefly (nothing but TLS records: a timeout) before redis-py's own check, which
    would otherwise reconnect, meet the same, and give up with "Connection not ready"."""
    import redis
    from redismedian.connection import ReadyPool

    class FakeTLS(redis.connection.SSLConnection):
        def __init__(self):
            self.events, self.pending = [], ["tickets"]

        def connect(self):
            self.events.append("connect")

        def can_read(self, timeout=0):
            return bool(self.pending)

        def read_response(self, **kw):
            self.events.append(("read", kw.get("timeout")))
            self.pending.clear()
            raise redis.exceptions.TimeoutError("Timeout reading")

        def disconnect(self, *a, **kw):
            self.events.append("disconnect")

    checked = []
    monkeypatch.setattr(redis.ConnectionPool, "ensure_connection",
                        lambda self, c: checked.append(c.can_read()), raising=False)
    conn = FakeTLS()
    ReadyPool().ensure_connection(conn)
    assert conn.events == ["connect", ("read", 0.05)] and checked == [False], (conn.events, checked)
