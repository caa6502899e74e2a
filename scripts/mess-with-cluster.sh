#!/usr/bin/env bash
# Moves the master of a cluster around its topology's members, like an operator
# doing planned switchovers, COUNT times (0: until stopped) every INTERVAL
# seconds, each with `redis-topology switchover --wait` to the member after the
# current master (in the order `redis-topology status` lists the nodes).
#
#   scripts/mess-with-cluster.sh redis-1 10 1
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -ge 1 ] || die "usage: $0 <cluster> [count (0 = forever)] [interval seconds]"
cluster=$1; count=${2:-0}; interval=${3:-1}
rt=$(bin redis-topology)

# The members of the topology, as `status --json` lists them ("desired" is set).
# One node object per line; registered ones have an address.
mapfile -t nodes < <("$rt" status "$cluster" --json | tr '{' '\n' | grep -e '"desired":"master"' -e '"desired":"slave"' \
    | grep '"address":"' | grep -o '"node":"[^"]*"' | cut -d'"' -f4)
[ ${#nodes[@]} -ge 2 ] || die "cluster $cluster has ${#nodes[@]} member(s) registered; need at least 2"
echo "rotating $cluster among ${nodes[*]}"

trap 'echo; echo "stopped after $moves move(s)"; exit 0' INT TERM
moves=0
while [ "$count" -eq 0 ] || [ "$moves" -lt "$count" ]; do
    current=$("$rt" status "$cluster" --json | grep -o '"desired_master":"[^"]*"' | cut -d'"' -f4)
    next=${nodes[0]}
    for i in "${!nodes[@]}"; do
        [ "${nodes[$i]}" = "$current" ] && next=${nodes[$(((i + 1) % ${#nodes[@]}))]}
    done
    moves=$((moves + 1))
    if "$rt" switchover "$cluster" --to "$next" --wait --timeout-secs 30 >/dev/null; then result=ok
    else result="exit $? (see: redis-topology status $cluster)"; fi
    echo "move $moves: master is now $next ($result)"
    sleep "$interval"
done
