#!/usr/bin/env bash
# Kept for old habits: `redis-topology trigger <cluster>`, which asks for the
# cluster's topology to be applied again (what node-agents do when redis restarts).
#
#   scripts/apply-topology.sh redis-1
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -eq 1 ] || die "usage: $0 <cluster>"
exec "$(bin redis-topology)" trigger "$1"
