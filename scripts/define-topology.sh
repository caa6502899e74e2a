#!/usr/bin/env bash
# Writes the desired topology of a cluster to etcd (/config/<cluster>/topology).
# The observer applies it (dictator, then dnsd) as soon as it is written.
#
#   scripts/define-topology.sh redis-1 topology.json
#   echo '{"master":{"address":"node-1.redis-1.cluster.local"}}' | scripts/define-topology.sh redis-1 -
#
# The topology is validated first; an invalid one is rejected with the field named.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -eq 2 ] || die "usage: $0 <cluster> <topology.json|->"
cluster=$1
check_cluster "$cluster"
topology=$("$(bin dictator)" check "$2") || exit 2
etcdctl put "$ETCD_PREFIX/config/$cluster/topology" "$topology" >/dev/null
echo "defined $cluster: $topology"
