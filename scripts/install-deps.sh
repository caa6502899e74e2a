#!/usr/bin/env bash
# Installs, with apt, the system packages that `scripts/test.sh` and `scripts/demo.sh`
# need and that are missing, on Debian 12 (bookworm) and Debian 13 (trixie).
#
# A package counts as present only if dpkg says it is installed: a command of the
# same name on the PATH proves nothing about, say, the .proto files the build reads.
# Safe to run again and again: with everything present it changes nothing.
set -euo pipefail

# Each package, and what needs it.
packages=(
    gcc                # build: the C parts of `ring` (rustls) and the linker driver
    libc6-dev          # build: the C library headers and crt files gcc links against
    protobuf-compiler  # build: `protoc`, run by etcd-client's build script
    libprotobuf-dev    # build: google/protobuf/*.proto, which etcd-client's protos import
    etcd-server        # tests, demo: every etcd the harness and the demo start
    etcd-client        # demo, operator scripts: etcdctl
    redis-server       # tests, demo: every redis-server (and the Sentinel benchmark)
    redis-tools        # operator scripts: redis-cli
    haproxy            # tests, demo: the write path through deploy/haproxy/haproxy.cfg
    bind9-dnsutils     # tests, demo, operator scripts: dig
    dnsperf            # dnsd tests and benchmark: DNS load
    dnsmasq-base       # dnsd benchmark: dnsmasq, the same records, side by side (-base: the binary
                       # without the package that starts a system resolver on port 53)
    knot               # dnsd benchmark: knotd, the same zone, side by side (its unit is stopped below)
    systemd            # deploy tests: systemd-analyze verify on the shipped units
    python3-redis      # e2e tests: redis-py's Sentinel client finding the master through dnsd
    prometheus         # metrics tests: promtool checks /metrics and deploy/monitoring's alert rules
    chromium           # status page test: loads the observer's page headless, takes the README's screenshot
    iproute2           # fault tests and benchmark: `ip netns` hosts, bridges and veth links
    mmdebstrap         # systemd test: builds the Debian root file system the container boots
    systemd-container  # systemd test: systemd-nspawn boots that root file system under a real systemd
)

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
for package in "${packages[@]}"; do
    installed "$package" || missing+=("$package")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: everything present"
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# No recommends: only what is listed here, so this list has to be complete.
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

for package in "${missing[@]}"; do
    installed "$package" || { echo "install-deps: $package did not install" >&2; exit 1; }
done

# Debian starts packaged servers right away; our tests and demo run their own
# instances on other ports, so stop the system ones to keep the machine quiet.
for unit in redis-server etcd haproxy prometheus knot; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$unit" 2>/dev/null; then
        $sudo systemctl stop "$unit" || true
    fi
done
