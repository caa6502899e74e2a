#!/usr/bin/env bash
# Asks for the cluster's topology to be applied again, by writing a fresh uuid to
# /config/<cluster>/topology-trigger (what node-agents do when redis restarts).
#
#   scripts/apply-topology.sh redis-1
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -eq 1 ] || die "usage: $0 <cluster>"
check_cluster "$1"
trigger=$(cat /proc/sys/kernel/random/uuid)
etcdctl put "$ETCD_PREFIX/config/$1/topology-trigger" "$trigger" >/dev/null
echo "triggered $1: $trigger"
