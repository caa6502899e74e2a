#!/usr/bin/env bash
# Rotates the master of a cluster through its registered nodes by writing new
# topologies to etcd, like an operator doing planned moves, COUNT times
# (0: until stopped) every INTERVAL seconds. Each move waits until the observer
# reports it applied.
#
#   scripts/mess-with-cluster.sh redis-1 10 1
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -ge 1 ] || die "usage: $0 <cluster> [count (0 = forever)] [interval seconds]"
cluster=$1; count=${2:-0}; interval=${3:-1}
check_cluster "$cluster"

mapfile -t nodes < <(etcdctl get --prefix --keys-only "$ETCD_PREFIX/nodes/$cluster/" | sed -n "s|^$ETCD_PREFIX/nodes/$cluster/||p" | sort)
[ ${#nodes[@]} -ge 2 ] || die "cluster $cluster has ${#nodes[@]} registered node(s); need at least 2"
echo "rotating $cluster among ${nodes[*]}"

trap 'echo; echo "stopped after $moves move(s)"; exit 0' INT TERM
moves=0
while [ "$count" -eq 0 ] || [ "$moves" -lt "$count" ]; do
    master=${nodes[$((moves % ${#nodes[@]}))]}
    slaves=""
    for node in "${nodes[@]}"; do
        [ "$node" = "$master" ] || slaves+="${slaves:+,}{\"address\":\"$node.$cluster.$DOMAIN\"}"
    done
    topology="{\"master\":{\"address\":\"$master.$cluster.$DOMAIN\"},\"slaves\":[$slaves]}"
    revision=$(etcdctl put -w json "$ETCD_PREFIX/config/$cluster/topology" "$topology" | grep -o '"revision":[0-9]*' | head -n 1 | cut -d: -f2)
    moves=$((moves + 1))
    # Wait (up to 30 s) for the observer to record this topology as applied.
    for _ in $(seq 300); do
        status=$(etcdctl get --print-value-only "$ETCD_PREFIX/status/$cluster")
        applied=$(grep -o '"topology_revision":[0-9]*' <<<"$status" | cut -d: -f2)
        if [ "${applied:-0}" -ge "$revision" ] && grep -q '"result":"ok"' <<<"$status"; then break; fi
        sleep 0.1
    done
    echo "move $moves: master is now $master ($(grep -o '"result":"[a-z]*"' <<<"$status"))"
    sleep "$interval"
done
