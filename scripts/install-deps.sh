#!/usr/bin/env bash
# Installs, with apt, only what is missing of the system packages the tests and the
# demo need (systemd only for systemd-analyze, which verifies the units).
# Safe to run again and again: with everything present it does nothing.
set -euo pipefail

# package -> a command it provides (how we tell it is installed)
declare -A provides=(
    [protobuf-compiler]=protoc
    [etcd-server]=etcd
    [etcd-client]=etcdctl
    [redis-server]=redis-server
    [redis-tools]=redis-cli
    [haproxy]=haproxy
    [dnsutils]=dig
    [dnsperf]=dnsperf
    [systemd]=systemd-analyze
)

missing=()
for package in "${!provides[@]}"; do
    command -v "${provides[$package]}" >/dev/null 2>&1 || \
        [ -x "/usr/sbin/${provides[$package]}" ] || missing+=("$package")
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
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Debian starts packaged servers right away; our tests and demo run their own
# instances on other ports, so stop the system ones to keep the machine quiet.
for unit in redis-server etcd haproxy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$unit" 2>/dev/null; then
        $sudo systemctl stop "$unit" || true
    fi
done
