"""--metrics-port: Prometheus metrics of each component (prometheus_client)."""
import socket
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest

from redismedian.common import Settings, period_to_ms
from redismedian.generator import Generator
from redismedian.metrics import ERROR_KINDS, Metrics, NullMetrics
from tests import plugins
from tests.prod_support import parse_metrics, sample
from tests.support import free_port, wait_until


def _gen(fake, fn, registry, period=0.1):
    m = Metrics("generator", "g1", "t", period, registry=registry)
    g = Generator(Settings(namespace="t", period_ms=period_to_ms(period)), name="g1", signal_fn=fn, client=fake,
                  metrics=m)
    return g, m


def test_generator_metrics_count_periods_submissions_and_errors(fake):
    reg = CollectorRegistry()
    g, _m = _gen(fake, plugins.sig_a, reg)
    assert g.run(max_epochs=3) == 0
    m = parse_metrics(generate_latest(reg).decode())
    lv = {"component": "generator", "name": "g1"}
    assert sample(m, "redismedian_periods_total", **lv) == 3
    assert sample(m, "redismedian_submissions_total", **lv) == 3
    assert sample(m, "redismedian_state", redismedian_state="ok", **lv) == 1
    assert sample(m, "redismedian_state", redismedian_state="error", **lv) == 0
    assert sample(m, "redismedian_period_latency_seconds_count", **lv) == 3
    assert sample(m, "redismedian_redis_script_seconds_count", **lv) >= 3
    assert sample(m, "redismedian_redis_up", **lv) == 1
    assert 0 <= sample(m, "redismedian_staleness_seconds", **lv) < 5
    last = sample(m, "redismedian_last_success_timestamp_seconds", **lv)
    assert abs(last * 1000 - int(fake.hget("t:signal:g1", "ts"))) < 1
    for kind in ERROR_KINDS:
        assert sample(m, "redismedian_errors_total", kind=kind, **lv) == 0

    reg2 = CollectorRegistry()
    bad, _m = _gen(fake, plugins.sig_nan, reg2)
    bad.settings.owner = g.settings.owner  # same process identity: the g1 lease is ours
    assert bad.run(max_epochs=2) == 0
    m = parse_metrics(generate_latest(reg2).decode())
    assert sample(m, "redismedian_errors_total", kind="signal_function", **lv) == 2
    assert sample(m, "redismedian_submissions_total", **lv) == 0
    assert sample(m, "redismedian_state", redismedian_state="error", **lv) == 1


def test_null_metrics_has_every_method_of_metrics():
    public = {n for n in dir(Metrics) if not n.startswith("_")}
    assert public <= set(dir(NullMetrics))


def _scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return parse_metrics(resp.read().decode())


def test_components_serve_metrics_over_http(cluster, redis_server):
    ports = {"g1": free_port(), "X": free_port(), "trader": free_port()}
    g1 = cluster.generator("g1", env=cluster.env(REDISMEDIAN_METRICS_PORT=str(ports["g1"])))
    cluster.strategy("X", "g1", "--metrics-port", str(ports["X"]))
    trader = cluster.trader("--metrics-port", str(ports["trader"]))
    trader.wait_for_output(r"median: ", timeout=20, count=2)
    t = {"component": "trader", "name": "trader"}
    m = wait_until(lambda: (lambda m: sample(m, "redismedian_submissions_total", **t) >= 2 and m)(
        _scrape(ports["trader"])), 10, what="two medians counted")
    r = redis_server.client(decode_responses=True)
    published = {float(f["median"]) for _i, f in r.xrange("t:medians")}
    assert sample(m, "redismedian_last_median", **t) in published
    assert sample(m, "redismedian_state", redismedian_state="ok", **t) == 1
    assert sample(m, "redismedian_period_latency_seconds_count", **t) >= 2
    assert sample(m, "redismedian_info", **t) == 1
    assert sample(m, "process_resident_memory_bytes") > 0   # the default process collector
    gm = _scrape(ports["g1"])
    assert sample(gm, "redismedian_periods_total", component="generator", name="g1") >= 2
    sm = _scrape(ports["X"])
    assert sample(sm, "redismedian_submissions_total", component="strategy", name="X") >= 1

    # The generator dies: the strategy reports missing signals, the trader missing decisions
    # (counted from now: the first period may already have had some, before X submitted).
    s = {"component": "strategy", "name": "X"}
    s_before = sample(_scrape(ports["X"]), "redismedian_errors_total", kind="signals", **s)
    t_before = sample(_scrape(ports["trader"]), "redismedian_errors_total", kind="missing_decisions", **t)
    g1.kill()
    wait_until(lambda: sample(_scrape(ports["X"]), "redismedian_errors_total", kind="signals", **s) > s_before, 15,
               what="strategy error counted")
    m = wait_until(lambda: (lambda m: sample(m, "redismedian_errors_total", kind="missing_decisions", **t)
                            > t_before and m)(_scrape(ports["trader"])), 15, what="trader error counted")
    assert sample(m, "redismedian_state", redismedian_state="error", **t) == 1
    assert sample(m, "redismedian_state", redismedian_state="ok", **t) == 0


def test_metrics_port_in_use_is_a_one_line_error(cluster):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = cluster.generator("g1", env=cluster.env(REDISMEDIAN_METRICS_PORT=str(port)))
        assert p.wait(15) == 1
    out = p.output()
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and f"cannot serve metrics on 127.0.0.1:{port}" in lines[0], out
