#!/usr/bin/env bash
# Installs redis-topology: the binaries (with redis-topology's shell completions),
# the systemd units of deploy/systemd/, the example settings of deploy/env/ (plus
# HAProxy's configs) and deploy/monitoring/, for a machine or a package.
#
#   scripts/install.sh [--prefix /usr/local] [--destdir DIR] [--unitdir DIR]
#                      [--sysconfdir /etc] [--bin-dir DIR] [--no-build]
#
#   --prefix      binaries go to PREFIX/bin, and the units' ExecStart= says so
#                 (default /usr/local; a package uses /usr)
#   --destdir     stage everything under DIR (packaging; also $DESTDIR); paths
#                 written into the units stay those of the target machine
#   --unitdir     where units go (default /etc/systemd/system; a package uses
#                 /usr/lib/systemd/system)
#   --sysconfdir  settings go to SYSCONFDIR/redis-topology (default /etc)
#   --bin-dir     take the binaries from DIR (default target/release)
#   --no-build    do not run `cargo build --release` first
#
# Idempotent: binaries and units are replaced when they differ; settings files
# that exist already are never overwritten (the example is left beside them as
# <name>.example when it differs). Without a destdir it writes to the real
# system, which needs root; it never starts or enables anything: deploy/README.md
# says what to run next.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix=/usr/local
destdir="${DESTDIR:-}"
unitdir=/etc/systemd/system
sysconfdir=/etc
bindir_src="$root/target/release"
build=1
binaries=(dictator dnsd observer node-agent counter redis-topology)

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }
need() { [ $# -ge 2 ] || { echo "install.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) need "$@"; prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#*=}"; shift ;;
        --destdir) need "$@"; destdir="$2"; shift 2 ;;
        --destdir=*) destdir="${1#*=}"; shift ;;
        --unitdir) need "$@"; unitdir="$2"; shift 2 ;;
        --unitdir=*) unitdir="${1#*=}"; shift ;;
        --sysconfdir) need "$@"; sysconfdir="$2"; shift 2 ;;
        --sysconfdir=*) sysconfdir="${1#*=}"; shift ;;
        --bin-dir) need "$@"; bindir_src="$2"; shift 2 ;;
        --bin-dir=*) bindir_src="${1#*=}"; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

for dir in "$prefix" "$unitdir" "$sysconfdir"; do
    case "$dir" in
        /*) ;;
        *) echo "install.sh: $dir must be an absolute path" >&2; exit 2 ;;
    esac
done
prefix="${prefix%/}"; unitdir="${unitdir%/}"; sysconfdir="${sysconfdir%/}"
if [ -n "$destdir" ]; then
    mkdir -p "$destdir"
    destdir="$(cd "$destdir" && pwd)"
elif [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: installing into the real system needs root (or give --destdir DIR)" >&2
    exit 1
fi

if [ "$build" -eq 1 ]; then
    echo "install.sh: building release binaries"
    (cd "$root" && cargo build --release --bins $(printf -- '-p %s ' "${binaries[@]}"))
    bindir_src="$root/target/release"
fi
for bin in "${binaries[@]}"; do
    [ -x "$bindir_src/$bin" ] || {
        echo "install.sh: $bindir_src/$bin missing (build it, or drop --no-build, or give --bin-dir)" >&2
        exit 1
    }
done

# put SRC DEST MODE: install when absent or different; say which.
put() {
    local src="$1" dest="$2" mode="$3"
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        echo "  unchanged  $dest"
        chmod "$mode" "$dest"
    else
        local what=installed
        [ -e "$dest" ] && what=updated
        install -D -m "$mode" "$src" "$dest"
        echo "  $what  $dest"
    fi
}

# keep SRC DEST: a settings file, never overwritten.
keep() {
    local src="$1" dest="$2"
    if [ ! -e "$dest" ]; then
        install -D -m 0644 "$src" "$dest"
        echo "  installed  $dest"
    elif cmp -s "$src" "$dest"; then
        echo "  unchanged  $dest"
    else
        install -m 0644 "$src" "$dest.example"
        echo "  kept       $dest (yours; the example is $dest.example)"
    fi
}

staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT

echo "install.sh: binaries -> $destdir$prefix/bin"
for bin in "${binaries[@]}"; do
    put "$bindir_src/$bin" "$destdir$prefix/bin/$bin" 0755
done

echo "install.sh: shell completions of redis-topology -> $destdir$prefix/share"
"$bindir_src/redis-topology" completions bash > "$staging/redis-topology.bash"
put "$staging/redis-topology.bash" "$destdir$prefix/share/bash-completion/completions/redis-topology" 0644
"$bindir_src/redis-topology" completions zsh > "$staging/_redis-topology"
put "$staging/_redis-topology" "$destdir$prefix/share/zsh/site-functions/_redis-topology" 0644

echo "install.sh: systemd units -> $destdir$unitdir"
for unit in "$root"/deploy/systemd/*.service; do
    name="$(basename "$unit")"
    # The units say /usr/local/bin and /etc/redis-topology; follow --prefix/--sysconfdir.
    sed -e "s|/usr/local/bin/|$prefix/bin/|g" \
        -e "s|/etc/redis-topology/|$sysconfdir/redis-topology/|g" "$unit" > "$staging/$name"
    put "$staging/$name" "$destdir$unitdir/$name" 0644
done
for dropin in "$root"/deploy/systemd/*.service.d/*.conf; do
    [ -e "$dropin" ] || continue
    rel="$(basename "$(dirname "$dropin")")/$(basename "$dropin")"
    mkdir -p "$staging/$(dirname "$rel")"
    sed -e "s|/etc/redis-topology/|$sysconfdir/redis-topology/|g" "$dropin" > "$staging/$rel"
    put "$staging/$rel" "$destdir$unitdir/$rel" 0644
done

echo "install.sh: settings -> $destdir$sysconfdir/redis-topology (existing files kept)"
for env in "$root"/deploy/env/*.env; do
    keep "$env" "$destdir$sysconfdir/redis-topology/$(basename "$env")"
done
# Secrets: root-only files the units hand to their dynamic users (LoadCredential=),
# created empty so every unit starts; fill in those in use. Never overwritten.
for secret in redis-password etcd-password etcd-client-key.pem; do
    dest="$destdir$sysconfdir/redis-topology/$secret"
    if [ -e "$dest" ]; then
        echo "  kept       $dest"
    else
        install -D -m 0600 /dev/null "$dest"
        echo "  created    $dest (empty, mode 0600)"
    fi
done
keep "$root/deploy/haproxy/haproxy.cfg" "$destdir$sysconfdir/redis-topology/haproxy.cfg"
# Code, not settings: always the repository's.
put "$root/deploy/haproxy/wait-for-server.lua" "$destdir$sysconfdir/redis-topology/wait-for-server.lua" 0644
keep "$root/deploy/haproxy/haproxy-httpchk.cfg" "$destdir$sysconfdir/redis-topology/haproxy-httpchk.cfg"

# The HTTP APIs' bearer token (LoadCredential=api-token in every unit): one random
# token, named for the audit log, made once on the real system, never overwritten.
# Every host of an installation needs the same file (the observer sends its first
# token to the dictator and dnsd): copy it. A staged package makes none: the same
# token on every machine that installs it would be no secret (make it in postinst).
token_file="$destdir$sysconfdir/redis-topology/api-token"
if [ -e "$token_file" ]; then
    echo "  kept       $token_file"
elif [ -z "$destdir" ]; then
    (umask 077 && printf 'observer:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" > "$token_file")
    echo "  created    $token_file (a random token, mode 0600; copy it to every host)"
else
    echo "  not made   $token_file (staged: make it on each target, e.g. in postinst)"
fi

echo "install.sh: Grafana dashboard and Prometheus alert rules -> $destdir$prefix/share/redis-topology/monitoring"
for file in "$root"/deploy/monitoring/*; do
    put "$file" "$destdir$prefix/share/redis-topology/monitoring/$(basename "$file")" 0644
done

if [ -z "$destdir" ]; then
    echo "install.sh: done. Next: edit $sysconfdir/redis-topology/*.env, then"
    echo "  systemctl daemon-reload && systemctl enable --now dnsd dictator observer"
    echo "  (node-agents: see deploy/README.md)"
else
    echo "install.sh: done (staged under $destdir)"
fi
