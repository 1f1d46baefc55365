#!/usr/bin/env bash
# Installs every test dependency (apt, rustup, cargo) and runs the whole suite:
# formatting, clippy, the x86_64 and aarch64 release builds, the .deb, the
# benchmarks, then every test. CI runs exactly this script.
#
# The cargo target dir lives outside the clone (CARGO_TARGET_DIR, default
# ~/.cache/commonscloud/target) so repeated runs reuse the build cache; a
# machine without that cache still passes, just slower.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# slapd and ldap-utils: the appliance runs its own slapd (directory tests);
# systemd: systemd-analyze verify and sysusers/tmpfiles on the units;
# gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user-static: the ARM build
# and running it; dpkg-dev: inspecting the .deb; shellcheck: the installer;
# python3: the footprint benchmark's baseline; python3-aiosmtpd: the SMTP sink;
# busybox-static: the shell and tools inside the stand-in images (images/testing);
# docker-registry: a registry on loopback for the image-pull tests;
# pebble: Let's Encrypt's ACME test server (/usr/bin/pebble) and its DNS
# stand-in (/usr/bin/pebble-challtestsrv), for the ACME tests (tests/acme.rs);
# chromium, chromium-driver: the console in a real headless browser
# (tests/browser.rs, driven through chromedriver);
# nginx: the proxy benchmark's baseline (it runs its own on loopback ports);
# mmdebstrap: the root filesystems of the real PostgreSQL and Redis test
# images, from Debian's packages (images/testing/debian-image.sh).
APT_PACKAGES=(
  slapd ldap-utils systemd dpkg-dev shellcheck python3 python3-aiosmtpd curl
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static busybox-static
  docker-registry pebble chromium chromium-driver nginx mmdebstrap
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  # Debian's slapd would otherwise create and start a system-wide directory;
  # the appliance runs its own instances.
  echo "slapd slapd/no_configuration boolean true" | as_root debconf-set-selections
  # Debian's nginx starts (and enables) a system-wide server on port 80 on
  # install where systemd runs; the benchmark needs none, so a policy-rc.d
  # refuses that start (containers usually have one refusing every start)
  # and the unit is disabled again.
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then
    trap 'as_root rm -f "$policy"' EXIT
    # shellcheck disable=SC2016 # "$1" belongs to the written script
    printf '#!/bin/sh\ncase "$1" in nginx|nginx.service) exit 101 ;; esac\nexit 0\n' |
      as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    made_policy=1
  fi
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ -n "$made_policy" ]; then
    as_root rm -f "$policy"
    trap - EXIT
  fi
  if printf '%s\n' "${missing[@]}" | grep -qx nginx; then
    as_root systemctl disable nginx >/dev/null 2>&1 || true
  fi
fi

log "rust: targets and tools"
# `cargo install` puts tools here; a fresh login shell may not have it on PATH.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
rustup target add aarch64-unknown-linux-gnu >/dev/null
rustup component add clippy rustfmt >/dev/null 2>&1 || true
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/commonscloud/target}"
mkdir -p "$CARGO_TARGET_DIR"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log "format and lints"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

log "release builds: x86_64 and aarch64"
cargo build --locked --release
cargo build --locked --release --target aarch64-unknown-linux-gnu

log "Debian packages"
# The release profile already strips.
cargo deb --no-build --no-strip
cargo deb --no-build --no-strip --target aarch64-unknown-linux-gnu

log "benchmark: footprint"
"$CARGO_TARGET_DIR/release/commonscloud" bench footprint --requests 1000

log "benchmark: directory"
"$CARGO_TARGET_DIR/release/commonscloud" bench directory

log "benchmark: federation"
"$CARGO_TARGET_DIR/release/commonscloud" bench federation

log "stand-in images: the static standin binary"
# The image tests build it on demand with exactly this command; building it
# here keeps that out of the tests' time.
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$CARGO_TARGET_DIR/standin" \
  cargo build --locked --release --target "$(uname -m)-unknown-linux-gnu" \
  --manifest-path images/testing/standin/Cargo.toml
CARGO_TARGET_DIR="$CARGO_TARGET_DIR/standin-tests" \
  cargo test --locked --quiet --manifest-path images/testing/standin/Cargo.toml

log "test images: PostgreSQL 15 and 17, Redis, from Debian's packages"
# Tagged by the hash of their build inputs, so a machine that built them
# once reuses them (a cold build of all three takes about a minute); the
# tests and the reconcile benchmark find them here instead of building.
images=(postgres:15 postgres:17 redis)
pids=()
for image in "${images[@]}"; do
  as_root images/testing/debian-image.sh "$image" \
    >/dev/null 2>"$CARGO_TARGET_DIR/test-image-${image/:/-}.log" &
  pids+=("$!")
done
for i in "${!images[@]}"; do
  build_log="$CARGO_TARGET_DIR/test-image-${images[$i]/:/-}.log"
  if ! wait "${pids[$i]}"; then
    cat "$build_log" >&2
    exit 1
  fi
  # "built <tag> in <s> s, <MiB> MiB" on a cold build; nothing when cached.
  grep -a '^built ' "$build_log" || echo "${images[$i]}: cached"
done

log "benchmark: reconcile"
"$CARGO_TARGET_DIR/release/commonscloud" bench reconcile \
  --standin "$CARGO_TARGET_DIR/standin/$(uname -m)-unknown-linux-gnu/release/standin"

log "benchmark: proxy"
# Short settings keep CI's time down (about 15 s); the defaults (10 s of
# requests, 1 GiB bodies) are for a person at the box.
"$CARGO_TARGET_DIR/release/commonscloud" bench proxy --seconds 5 --body-mib 256

log "tests"
cargo nextest run --locked --no-fail-fast
