# Shared settings of the operator scripts; sourced, not run.
# Every setting comes from the environment, with the services' defaults.
ETCDCTL_ENDPOINTS=${ETCDCTL_ENDPOINTS:-http://127.0.0.1:2379}
REDIS_TOPOLOGY_ETCD_PREFIX=${REDIS_TOPOLOGY_ETCD_PREFIX:-}
REDIS_TOPOLOGY_ETCD_PREFIX=${REDIS_TOPOLOGY_ETCD_PREFIX%/}
[ -z "$REDIS_TOPOLOGY_ETCD_PREFIX" ] || REDIS_TOPOLOGY_ETCD_PREFIX="/${REDIS_TOPOLOGY_ETCD_PREFIX#/}"
REDIS_TOPOLOGY_DOMAIN=${REDIS_TOPOLOGY_DOMAIN:-cluster.local}
REDIS_TOPOLOGY_NAMESERVER=${REDIS_TOPOLOGY_NAMESERVER:-127.0.0.1:5353}

# The project's binaries: from REDIS_TOPOLOGY_BIN_DIR if set (tests use it, so a
# stale release build is never picked), else this checkout's build, else PATH.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin() {
    if [ -n "${REDIS_TOPOLOGY_BIN_DIR:-}" ]; then echo "$REDIS_TOPOLOGY_BIN_DIR/$1"
    elif [ -x "$root/target/release/$1" ]; then echo "$root/target/release/$1"
    elif [ -x "$root/target/debug/$1" ]; then echo "$root/target/debug/$1"
    else command -v "$1" || { echo "$1 not found: build with cargo build --release" >&2; exit 2; }
    fi
}

etcdctl() {
    # etcdctl refuses --endpoints beside ETCDCTL_ENDPOINTS: the variable alone.
    ETCDCTL_API=3 ETCDCTL_ENDPOINTS="$ETCDCTL_ENDPOINTS" command etcdctl "$@"
}

die() {
    echo "$(basename "$0"): $*" >&2
    exit 2
}

check_cluster() {
    [[ "$1" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || die "cluster name '$1' must be lowercase letters, digits and '-'"
}
