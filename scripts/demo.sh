#!/usr/bin/env bash
# The local demo: a whole redis-topology cluster on loopback, and a lossless
# switchover shown by the counter.
#
#   scripts/demo.sh          # run, show, stop everything
#   scripts/demo.sh --keep   # leave the cluster running and print how to use it
#
# Starts etcd, three redis-servers each with a node-agent, dnsd, the dictator,
# the observer and HAProxy (deploy/haproxy/haproxy.cfg), defines the topology,
# runs the counter through HAProxy while mess-with-cluster moves the master 10
# times (redis-topology switchover --wait), prints the counter's tally and the DNS answers.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
keep=false
[ "${1:-}" = "--keep" ] && keep=true

scripts/install-deps.sh
echo "demo: building (release)..."
cargo build --release --workspace --bins --quiet
bin=$root/target/release

cluster=redis-1
domain=cluster.local
# Fixed demo ports, all on 127.0.0.1.
etcd_port=12379; etcd_peer=12380
dictator_port=18000; dnsd_port=18001; dns_port=18053; observer_port=18002
# DEMO_REDIS_PORTS="p1 p2 p3" moves the redis-servers when 17001-17003 are taken.
read -r -a redis_ports <<<"${DEMO_REDIS_PORTS:-17001 17002 17003}"; agent_ports=(18011 18012 18013)
write_port=16380; read_port=16381; stats_port=18404

for p in $etcd_port $etcd_peer $dictator_port $dnsd_port $dns_port $observer_port \
         "${redis_ports[@]}" "${agent_ports[@]}" $write_port $read_port $stats_port; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "demo: port $p is in use (an earlier 'demo.sh --keep'? stop it with: kill \$(cat .demo/pids))" >&2
        exit 2
    fi
done

state=$root/.demo
rm -rf "$state"; mkdir -p "$state"
pids=()
start() { # name, command...
    local name=$1; shift
    "$@" >"$state/$name.log" 2>&1 &
    pids+=($!)
    echo $! >>"$state/pids"
}
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
if ! $keep; then trap 'stop_all; echo "demo: stopped everything it started"' EXIT; fi
trap 'exit 130' INT TERM

wait_http() { # port, what
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "demo: $2 did not come up; see $state/" >&2; exit 1
}

export ETCDCTL_ENDPOINTS=http://127.0.0.1:$etcd_port REDIS_TOPOLOGY_NAMESERVER=127.0.0.1:$dns_port REDIS_TOPOLOGY_DOMAIN=$domain
export RUST_LOG=${RUST_LOG:-info}

echo "demo: starting etcd, 3 redis-servers with node-agents, dnsd, dictator, observer, HAProxy"
start etcd etcd --name demo --data-dir "$state/etcd" \
    --listen-client-urls "$ETCDCTL_ENDPOINTS" --advertise-client-urls "$ETCDCTL_ENDPOINTS" \
    --listen-peer-urls http://127.0.0.1:$etcd_peer --initial-advertise-peer-urls http://127.0.0.1:$etcd_peer \
    --initial-cluster demo=http://127.0.0.1:$etcd_peer --log-level warn
wait_http $etcd_port etcd

for i in 0 1 2; do
    n=$((i + 1)); dir=$state/redis-$n; mkdir -p "$dir"
    printf 'port %s\nbind 127.0.0.1\ndir %s\nsave ""\nappendonly no\nrepl-diskless-sync-delay 0\n' \
        "${redis_ports[$i]}" "$dir" >"$dir/redis.conf"
    start "redis-$n" redis-server "$dir/redis.conf"
    start "node-agent-$n" "$bin/node-agent" --cluster $cluster --node node-$n \
        --redis 127.0.0.1:${redis_ports[$i]} --listen 127.0.0.1:${agent_ports[$i]}
done
start dnsd "$bin/dnsd" --listen 127.0.0.1:$dnsd_port --dns-listen 127.0.0.1:$dns_port --domain $domain --cluster $cluster
start dictator "$bin/dictator" --listen 127.0.0.1:$dictator_port --nameserver 127.0.0.1:$dns_port --cluster $cluster
start observer "$bin/observer" --listen 127.0.0.1:$observer_port \
    --dictator http://127.0.0.1:$dictator_port --dnsd http://127.0.0.1:$dnsd_port
for p in "${agent_ports[@]}" $dnsd_port $dictator_port $observer_port; do wait_http "$p" "service on port $p"; done
REDIS_TOPOLOGY_DNSD_DNS=127.0.0.1:$dns_port REDIS_TOPOLOGY_CLUSTER=$cluster REDIS_TOPOLOGY_DOMAIN=$domain REDIS_TOPOLOGY_WRITE_BIND=127.0.0.1:$write_port \
REDIS_TOPOLOGY_READ_BIND=127.0.0.1:$read_port REDIS_TOPOLOGY_STATS_BIND=127.0.0.1:$stats_port \
    start haproxy haproxy -f deploy/haproxy/haproxy.cfg
wait_http $write_port haproxy

echo "demo: defining the topology: node-1 master, node-2 and node-3 slaves"
for _ in $(seq 100); do
    [ "$("$bin/redis-topology" list --json | grep -o '"role":"[a-z]*"' | grep -c -e master -e slave)" -ge 3 ] && break
    sleep 0.1
done
# --force: here one machine stands in for three, which define refuses otherwise
# (placement: losing a host must not lose a whole group).
"$bin/redis-topology" define $cluster --master node-1 --slave node-2 --slave node-3 --force
# Applied once roles, the topology and DNS agree.
for _ in $(seq 100); do
    "$bin/redis-topology" check $cluster >/dev/null && break
    sleep 0.1
done
"$bin/redis-topology" status $cluster

echo "demo: counter writing ~1000 ids/s through HAProxy (127.0.0.1:$write_port) while the master moves 10 times"
"$bin/counter" --redis 127.0.0.1:$write_port --duration-secs 3600 --json >"$state/counter.json" 2>"$state/counter.log" &
counter=$!
sleep 1
scripts/mess-with-cluster.sh $cluster 10 1
sleep 1
kill -INT $counter
wait $counter && verdict=0 || verdict=$?

echo
echo "demo: the counter's tally:"
grep -o '"tally":"[^"]*"' "$state/counter.json" | sed 's/"tally":"\(.*\)"/  \1/' 
grep -o '"longest_window_ms":[0-9.]*' "$state/counter.json" | sed 's/"longest_window_ms":/  longest write-unavailable window through HAProxy: /; s/$/ ms/'
echo
echo "demo: DNS answers from dnsd (dig @127.0.0.1 -p $dns_port):"
for q in "SRV _redis._tcp.master.$cluster.$domain" "SRV _redis._tcp.slaves.$cluster.$domain" "TXT version.$cluster.$domain"; do
    echo "  $q:"
    dig +short -p $dns_port @127.0.0.1 $q | sed 's/^/    /'
done
echo
if [ "$verdict" -ne 0 ]; then echo "demo: the counter failed (exit $verdict: lost, phantom or no acknowledged writes; why in $state/counter.log)"; exit 1; fi
if $keep; then
    cat <<EOF2
demo: the cluster keeps running (pids in $state/pids; stop: kill \$(cat $state/pids)).
  export ETCDCTL_ENDPOINTS=$ETCDCTL_ENDPOINTS REDIS_TOPOLOGY_NAMESERVER=$REDIS_TOPOLOGY_NAMESERVER PATH=$bin:\$PATH
  redis-topology list                                     # every node: role, health, lag, DNS
  redis-topology switchover $cluster --to node-2 --wait   # move the master, see the report
  redis-topology check                                    # roles, topology and DNS agree?
  redis-topology history $cluster
  redis-cli -p $write_port SET k v                        # writes through HAProxy
  scripts/mess-with-cluster.sh $cluster 5 1               # move the master 5 times
  HAProxy stats: http://127.0.0.1:$stats_port/
EOF2
fi
