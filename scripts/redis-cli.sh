#!/usr/bin/env bash
# Finds the cluster's master through dnsd (SRV master.<cluster>.<domain>) and runs
# redis-cli against it; `--slave` picks the first slave instead.
#
#   scripts/redis-cli.sh redis-1 INFO replication
#   scripts/redis-cli.sh --slave redis-1 GET key
#   REDIS_TOPOLOGY_NAMESERVER=10.0.0.11:53,10.0.0.21:53 scripts/redis-cli.sh redis-1 PING
set -euo pipefail
source "$(dirname "$0")/lib.sh"
role=master
if [ "${1:-}" = "--slave" ]; then role=slaves; shift; fi
[ $# -ge 1 ] || die "usage: $0 [--slave] <cluster> [redis-cli arguments]"
cluster=$1; shift
check_cluster "$cluster"
# REDIS_TOPOLOGY_NAMESERVER may list several dnsd replicas (a,b): the first that answers is used.
IFS=, read -r -a nameservers <<<"$REDIS_TOPOLOGY_NAMESERVER"
for nameserver in "${nameservers[@]}"; do
    server=${nameserver%:*}; port=${nameserver##*:}
    srv=$(dig +short +time=1 +tries=2 -p "$port" "@$server" SRV "$role.$cluster.$REDIS_TOPOLOGY_DOMAIN" 2>/dev/null | grep -v '^;' | head -n 1) || true
    [ -n "$srv" ] || continue
    read -r _priority _weight redis_port target <<<"$srv"
    host=$(dig +short +time=1 +tries=2 -p "$port" "@$server" A "$target" 2>/dev/null | grep -v '^;' | head -n 1) || true
    [ -n "$host" ] || continue
    exec redis-cli -h "$host" -p "$redis_port" "$@"
done
die "no SRV record (with an address) for $role.$cluster.$REDIS_TOPOLOGY_DOMAIN at any of $REDIS_TOPOLOGY_NAMESERVER"
