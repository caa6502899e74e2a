#!/usr/bin/env bash
# Runs every test against real etcd and redis-server processes. Exits non-zero on
# any failure. Usage: scripts/test.sh [extra cargo-nextest/cargo-test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# End-to-end tests start the real service binaries, so build them first.
cargo build --workspace --bins --quiet
# The package tests (deploy.rs, systemd.rs) build the .deb with cargo-deb.
scripts/build-deb.sh --tool-only

if cargo nextest --version >/dev/null 2>&1; then
    # nextest runs each test in its own process: a crashed test cannot take
    # another's servers down with it. Two cores: keep parallelism modest, tests
    # run several servers each.
    cargo nextest run --workspace --no-fail-fast --test-threads 2 "$@"
    # The Debian package under a real systemd (support/e2e/tests/systemd.rs) boots
    # a container for a few minutes: ignored in the run above, run here on its own.
    cargo nextest run -p e2e --test systemd --run-ignored only "$@"
    # nextest does not run doc tests.
    cargo test --workspace --doc --quiet
else
    cargo test --workspace --no-fail-fast -- --test-threads 2 "$@"
    cargo test -p e2e --test systemd -- --ignored "$@"
fi
