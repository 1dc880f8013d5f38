"""A real Redis Cluster for tests: 3 masters and 3 replicas, each a redis-server on a free loopback
port in the test's temporary folder (never the machine's shared Redis).

The cluster is put together with plain commands (CLUSTER SET-CONFIG-EPOCH, ADDSLOTSRANGE, MEET,
REPLICATE), so no redis-cli is needed, and the same code works for valkey-server.
"""
from __future__ import annotations

from pathlib import Path

import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS

from tests.support import RedisServer, free_ports, wait_until


class RedisClusterNodes:
    """``masters`` masters, each with ``replicas`` replicas; ``node_timeout_ms`` decides how soon a
    dead master's replica takes over (about node timeout + 1 s)."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1500,
                 extra: list[str] | None = None):
        self.masters_n, self.replicas_n = masters, replicas
        self.node_timeout_ms = node_timeout_ms
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms), *(extra or [])]
        # The cluster bus port is given explicitly: the default (port + 10000) may be taken or > 65535.
        # Every node's port and bus port chosen at once: all distinct.
        nodes = masters * (1 + replicas)
        ports = free_ports(2 * nodes)
        self.bus_ports = ports[nodes:]
        self.servers = [RedisServer(Path(workdir) / f"node{i}", port=ports[i],
                                    extra=[*args, "--cluster-port", str(bus)])
                        for i, bus in enumerate(self.bus_ports)]

    @property
    def url(self) -> str:
        """The URL a component gets: every master as a starting point, as an operator would give."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:self.masters_n])

    def start(self, timeout: float = 30.0) -> "RedisClusterNodes":
        for s in self.servers:
            s.start()
        ids = [s.client().execute_command("CLUSTER", "MYID").decode() for s in self.servers]
        per = REDIS_CLUSTER_HASH_SLOTS // self.masters_n
        for i, s in enumerate(self.servers[:self.masters_n]):
            c = s.client()
            c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            end = REDIS_CLUSTER_HASH_SLOTS - 1 if i == self.masters_n - 1 else (i + 1) * per - 1
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, end)
        first = self.servers[0].client()
        for s, bus in zip(self.servers[1:], self.bus_ports[1:]):
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", s.port, bus)
        wait_until(lambda: all(self._knows_all(s) for s in self.servers), timeout, what="cluster nodes meeting")
        for j, s in enumerate(self.servers[self.masters_n:]):
            s.client().execute_command("CLUSTER", "REPLICATE", ids[j % self.masters_n])
        self.wait_ok(timeout)
        wait_until(lambda: all(self._in_sync(s) for s in self.servers[self.masters_n:]), timeout,
                   what="replicas in sync")
        return self

    def _knows_all(self, s: RedisServer) -> bool:
        nodes = s.client(socket_timeout=1).execute_command("CLUSTER", "NODES")
        text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
        return len([line for line in text.splitlines() if line.strip()]) == len(self.servers)

    @staticmethod
    def _in_sync(s: RedisServer) -> bool:
        info = s.client(socket_timeout=1).info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def alive(self) -> list[RedisServer]:
        return [s for s in self.servers if s.proc is not None and s.proc.poll() is None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node says cluster_state:ok."""
        def ok():
            return all(s.client(socket_timeout=1).cluster("info").get("cluster_state") == "ok"
                       for s in self.alive())
        wait_until(ok, timeout, what="cluster_state:ok on every node")

    def master_of(self, key: str) -> RedisServer:
        """The live master that serves ``key``'s slot now (asked of the cluster itself)."""
        slot = redis.crc.key_slot(key.encode())
        for s in self.alive():
            try:
                for entry in s.client(socket_timeout=1).execute_command("CLUSTER", "SLOTS"):
                    if int(entry[0]) <= slot <= int(entry[1]):
                        port = int(entry[2][1])
                        return next(x for x in self.servers if x.port == port)
            except redis.exceptions.ConnectionError:
                continue
        raise AssertionError(f"no live node knows who serves slot {slot}")

    def replicas_of(self, master: RedisServer) -> list[RedisServer]:
        out = []
        for s in self.alive():
            if s is master:
                continue
            info = s.client(socket_timeout=1).info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                out.append(s)
        return out

    def stop_all(self) -> None:
        for s in self.servers:
            s.kill()
