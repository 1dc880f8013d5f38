"""The soak's short form for CI: a seeded schedule of random faults over 30 periods; no wrong
median, recovery from every fault.  The long form: python -m tests.soak --periods 300 --seed 1."""

from tests import soak


def test_short_soak(tmp_path):
    lines = []
    result = soak.run(periods=30, seed=7, period=0.5, workdir=tmp_path, log=lines.append)
    text = "\n".join(lines) + "\n" + result.summary()
    print(text)
    assert sum(result.faults.values()) >= 4, text
    assert result.medians >= 10, text
    assert result.wrong == 0, text
    assert not result.unrecovered and not result.crashed, text
    assert max(p for _f, p in result.recoveries) <= 4, text
