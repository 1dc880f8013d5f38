#!/usr/bin/env bash
# A Redis Cluster of 3 masters and 3 replicas on one host, for trying redismedian in cluster mode
# (production: one node per machine, the same steps).  Every node loads the same ACL file, made by
#   redismedian acl --cluster --generators g1,g2,g3 --strategies X,Y > users.acl   (+ render-acl.sh)
#
#   deploy/cluster/start-cluster.sh [DIR] [FIRST_PORT]     # default: ./cluster-data 7000 (7000-7005)
#   ... then point every component at it:
#   REDISMEDIAN_REDIS_URL=redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002
#
# Environment: REDIS_SERVER / REDIS_CLI (binaries; valkey-server / valkey-cli work too), ACL_FILE
# (an ACL file for every node; then REDISCLI_AUTH / ADMIN_USER must name a user allowed to build the
# cluster), NODE_TIMEOUT_MS (default 1500: a dead master's replica takes over in about 2-3 s).
set -euo pipefail
DIR=${1:-./cluster-data}
FIRST=${2:-7000}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
NODE_TIMEOUT_MS=${NODE_TIMEOUT_MS:-1500}
CLI_USER=()
[ -n "${ADMIN_USER:-}" ] && CLI_USER=(--user "$ADMIN_USER")

mkdir -p "$DIR"
nodes=()
for i in 0 1 2 3 4 5; do
  port=$((FIRST + i))
  mkdir -p "$DIR/$port"
  args=(--port "$port" --bind 127.0.0.1 --dir "$DIR/$port" --logfile "$DIR/$port/redis.log"
        --daemonize yes --pidfile "$DIR/$port/redis.pid"
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout "$NODE_TIMEOUT_MS"
        --appendonly yes)   # a promoted replica must not start empty
  [ -n "${ACL_FILE:-}" ] && args+=(--aclfile "$(realpath "$ACL_FILE")")
  "$REDIS_SERVER" "${args[@]}"
  nodes+=("127.0.0.1:$port")
done
for n in "${nodes[@]}"; do   # wait until every node answers
  for _ in $(seq 100); do "$REDIS_CLI" "${CLI_USER[@]}" -h 127.0.0.1 -p "${n#*:}" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
"$REDIS_CLI" "${CLI_USER[@]}" --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes
for _ in $(seq 300); do
  "$REDIS_CLI" "${CLI_USER[@]}" -p "$FIRST" cluster info | grep -q '^cluster_state:ok' && break
  sleep 0.1
done
echo "cluster up: redis+cluster://${nodes[0]},${nodes[1]},${nodes[2]}"
echo "stop it:    for p in $DIR/*/redis.pid; do kill \$(cat \$p); done"
