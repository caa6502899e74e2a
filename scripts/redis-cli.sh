#!/usr/bin/env bash
# Finds the cluster's master through dnsd (SRV master.<cluster>.<domain>) and runs
# redis-cli against it; `--slave` picks the first slave instead.
#
#   scripts/redis-cli.sh redis-1 INFO replication
#   scripts/redis-cli.sh --slave redis-1 GET key
set -euo pipefail
source "$(dirname "$0")/lib.sh"
role=master
if [ "${1:-}" = "--slave" ]; then role=slaves; shift; fi
[ $# -ge 1 ] || die "usage: $0 [--slave] <cluster> [redis-cli arguments]"
cluster=$1; shift
check_cluster "$cluster"
server=${NAMESERVER%:*}; port=${NAMESERVER##*:}
srv=$(dig +short +time=1 +tries=2 -p "$port" "@$server" SRV "$role.$cluster.$DOMAIN" | head -n 1)
[ -n "$srv" ] || die "no SRV record for $role.$cluster.$DOMAIN at $NAMESERVER"
read -r _priority _weight redis_port target <<<"$srv"
host=$(dig +short +time=1 +tries=2 -p "$port" "@$server" A "$target" | head -n 1)
[ -n "$host" ] || die "no address for $target at $NAMESERVER"
exec redis-cli -h "$host" -p "$redis_port" "$@"
