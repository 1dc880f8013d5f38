"""Hot-standby traders with fencing: one leads (a lease in Redis renewed every period), the
others stand by and show as such in `status`; when the leader dies or hangs a standby takes
over within its lease time (1.5 periods), and a paused old leader that wakes up can never
publish (its fencing token is checked inside the publishing script)."""
import json
import signal

import pytest

from tests.faultkit import NS, assert_invariant, now_ms, report
from tests.support import wait_until

TAKEOVER_LIMIT = 2.5  # periods; the lease is 1.5 periods, the target is 2


def leader_and_standby(topo):
    first = topo.watcher.wait_for_median_after(now_ms(), 15, "first median")
    owners = {}

    def roles():
        data = json.loads(topo.cluster.cli("status", "--json").stdout)
        owners.clear()
        owners.update({t["role"]: t["owner"] for t in data["traders"]})
        return len(data["traders"]) == 2 and set(owners) == {"leader", "standby"}
    wait_until(roles, 10, what="one leader and one standby in status")
    pid = int(owners["leader"].split(":")[1])
    leader = next(p for p in topo.traders if p.pid == pid)
    standby = next(p for p in topo.traders if p.pid != pid)
    return leader, standby, first


def test_status_shows_leader_and_standby(topo):
    topo.start(traders=2)
    leader, standby, _ = leader_and_standby(topo)
    text = topo.cluster.cli("status").stdout
    assert f"leader   {topo.client().get(f'{NS}:lease:trader').decode().rsplit('|', 1)[0]}" in text, text
    assert "standby" in text
    standby.wait_for_output(r"standing by \(leader: ", 10)


@pytest.mark.parametrize("fault", ["stop", "kill"])
def test_standby_takes_over_and_old_leader_never_publishes(topo, fault):
    topo.start(traders=2)
    leader, standby, _ = leader_and_standby(topo)
    old_fence = int(topo.trader_hash()["fence"])
    fault_ms = now_ms()
    leader.signal(signal.SIGSTOP if fault == "stop" else signal.SIGKILL)
    standby.wait_for_output(r"took the lead \(fencing token", 10)
    new = wait_until(lambda: next((e for e in topo.watcher.snapshot() if e.fence > old_fence), None), 10,
                     what="a median under the new fencing token")
    takeover = topo.periods(new.ts - fault_ms)
    if fault == "stop":
        topo.wait_periods(2)
        leader.signal(signal.SIGCONT)
        # Woken in its tick it sees the new holder; woken while collecting, its fenced settle is refused.
        leader.wait_for_output(r"lost the lead (to .*|before settling epoch \d+); standing by", 10)
        t = now_ms()
        topo.watcher.wait_for_median_after(t + 1000, 10, "medians after the old leader woke up")
        assert all(e.fence >= new.fence for e in topo.watcher.snapshot() if e.ts >= new.ts)
        # the old leader published nothing after it woke up
        assert "median: " not in leader.output().split("lost the lead")[-1]
    topo.watcher.wait_for_median_after(new.ts + 1000, 10, "medians under the new leader")
    report(f"leader {fault}", takeover_periods=takeover)
    entries = assert_invariant(topo, min_entries=3)
    fences = [e.fence for e in entries]
    assert fences == sorted(fences)
    assert takeover <= TAKEOVER_LIMIT, f"took over after {takeover:.2f} periods"


def test_leader_paused_while_waiting_never_publishes_late(topo):
    """The leader is paused between the check and its publishing call: it can only publish
    through the script, which refuses a fencing token that is no longer the lease's."""
    topo.start(traders=2)
    leader, standby, _ = leader_and_standby(topo)
    for _ in range(3):
        leader.signal(signal.SIGSTOP)
        topo.wait_periods(2.2)
        leader.signal(signal.SIGCONT)
        topo.wait_periods(1.3)
        # whoever leads now, pause it next
        lease = wait_until(lambda: topo.client().get(f"{NS}:lease:trader"), 10, what="a trader holding the lead")
        pid = int(lease.decode().split(":")[1])
        leader = next(p for p in topo.traders if p.pid == pid)
    topo.wait_periods(1)
    entries = assert_invariant(topo, min_entries=4)
    assert len({e.fence for e in entries}) >= 3
