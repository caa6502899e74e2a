#!/usr/bin/env bash
# Writes the desired topology of a cluster to etcd (/config/<cluster>/topology).
# The observer applies it (dictator, then dnsd) as soon as it is written.
#
#   scripts/define-topology.sh redis-1 topology.json
#   echo '{"master":{"address":"node-1.redis-1.cluster.local"}}' | scripts/define-topology.sh redis-1 -
#
# The topology is validated first; an invalid one is rejected with the field named.
# Every member must be an IP address or a node name of the cluster
# (<node>.<cluster>.<domain>), the names dnsd can publish. The domain is the one
# dnsd recorded in etcd (/domain); DOMAIN is used only before any dnsd has run, and
# a DOMAIN that differs from dnsd's is refused.
set -euo pipefail
explicit_domain=${DOMAIN:-}
source "$(dirname "$0")/lib.sh"
[ $# -eq 2 ] || die "usage: $0 <cluster> <topology.json|->"
cluster=$1
check_cluster "$cluster"
recorded=$(etcdctl get --print-value-only "$ETCD_PREFIX/domain") || die "etcd ($ETCD_ENDPOINTS) unreachable"
if [ -n "$recorded" ]; then
    [ -z "$explicit_domain" ] || [ "$explicit_domain" = "$recorded" ] \
        || die "DOMAIN is $explicit_domain but dnsd serves $recorded ($ETCD_PREFIX/domain in etcd)"
    DOMAIN=$recorded
fi
topology=$("$(bin dictator)" check --cluster "$cluster" --domain "$DOMAIN" "$2") || exit 2
etcdctl put "$ETCD_PREFIX/config/$cluster/topology" "$topology" >/dev/null
echo "defined $cluster: $topology"
