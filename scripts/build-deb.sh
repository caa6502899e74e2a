#!/usr/bin/env bash
# Builds the Debian package of redis-topology with cargo-deb (installing cargo-deb
# first when it is missing) and prints the path of the .deb.
#
#   scripts/build-deb.sh [--no-build] [--bin-dir DIR] [--output DIR] [--fast]
#
#   --no-build  do not run `cargo build --release` first
#   --bin-dir   package the binaries in DIR (implies --no-build; default
#               target/release; the systemd test packages the ones it runs)
#   --output    where the .deb goes (default target/debian)
#   --fast      faster, larger compression (tests)
#   --tool-only install cargo-deb if missing, build nothing (scripts/test.sh)
#
# The package (see [package.metadata.deb] in support/cli/Cargo.toml) holds
# /usr/bin/redis-topology and redis-topology-{dictator,dnsd,observer,node-agent,
# counter}, the units of deploy/systemd/ in /usr/lib/systemd/system with ExecStart=
# rewritten to those names, the example settings of deploy/env/ and HAProxy's
# config in /etc/redis-topology/ (conffiles), and HAProxy's drop-in as an example
# in /usr/share/redis-topology/examples/. Install: `apt install ./redis-topology_*.deb`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build=1
bindir_src=""
output="$root/target/debian"
fast=()
tool_only=0
binaries=(dictator dnsd observer node-agent counter redis-topology)
services=(dictator dnsd observer node-agent)

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }
need() { [ $# -ge 2 ] || { echo "build-deb.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) need "$@"; bindir_src="$2"; build=0; shift 2 ;;
        --no-build) build=0; shift ;;
        --output) need "$@"; output="$2"; shift 2 ;;
        --fast) fast=(--fast); shift ;;
        --tool-only) tool_only=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

# A fresh machine has only the Rust toolchain: cargo-deb comes from crates.io.
if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb.sh: installing cargo-deb (cargo install cargo-deb --locked)" >&2
    cargo install cargo-deb --locked
fi
[ "$tool_only" -eq 0 ] || exit 0

cd "$root"
if [ "$build" -eq 1 ]; then
    cargo build --release --bins $(printf -- '-p %s ' "${binaries[@]}") >&2
fi
bindir_src="${bindir_src:-${CARGO_TARGET_DIR:-$root/target}/release}"
for bin in "${binaries[@]}"; do
    [ -x "$bindir_src/$bin" ] || { echo "build-deb.sh: $bindir_src/$bin missing (drop --no-build, or give --bin-dir)" >&2; exit 1; }
done

# cargo-deb reads its assets from target/release/ of CARGO_TARGET_DIR: a scratch one
# holding (links to) the binaries, the units rewritten to run the package's names,
# and the CLI's completions. The real target directory is left alone.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
staging="$scratch/release/deb-staging"
mkdir -p "$staging/units"
for bin in "${binaries[@]}"; do
    ln -f "$bindir_src/$bin" "$scratch/release/$bin" 2>/dev/null || cp "$bindir_src/$bin" "$scratch/release/$bin"
done
rename=()
for service in "${services[@]}"; do
    rename+=(-e "s|^ExecStart=/usr/local/bin/$service\\b|ExecStart=/usr/bin/redis-topology-$service|")
done
for unit in deploy/systemd/*.service; do
    sed "${rename[@]}" "$unit" > "$staging/units/$(basename "$unit")"
    if grep -q '^ExecStart=/usr/local/' "$staging/units/$(basename "$unit")"; then
        echo "build-deb.sh: $unit runs a binary the package does not rename" >&2
        exit 1
    fi
done
"$bindir_src/redis-topology" completions bash > "$staging/redis-topology.bash"
"$bindir_src/redis-topology" completions zsh > "$staging/_redis-topology"

mkdir -p "$output"
# cargo-deb prints the path of the .deb it wrote; the build's own output goes to stderr.
CARGO_TARGET_DIR="$scratch" cargo deb -p redis-topology --no-build --output "$output" "${fast[@]}" | tail -n 1
