#!/usr/bin/env bash
# Kept for old habits: `redis-topology define <cluster> --file <topology.json|->`.
# Writes the desired topology of a cluster to etcd after validating it (the
# JSON rules, and every member an IP address or a node of the cluster in the
# zone dnsd serves); an invalid one is refused with the field named (exit 2).
#
#   scripts/define-topology.sh redis-1 topology.json
#   echo '{"master":{"address":"node-1.redis-1.cluster.local"}}' | scripts/define-topology.sh redis-1 -
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -eq 2 ] || die "usage: $0 <cluster> <topology.json|->"
exec "$(bin redis-topology)" define "$1" --file "$2"
