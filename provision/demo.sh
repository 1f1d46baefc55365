#!/usr/bin/env bash
# Sets up and runs a demo appliance on this machine, without root: a demo
# config on the embedded defaults (SQLite state, local paths and sockets under
# ./.commonscloud-demo, high ports on 127.0.0.1), in the foreground.
# Stop it with Ctrl-C; run it again to pick up where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

# Runtime programs the appliance drives. Installed only when running as root;
# otherwise `commonscloud doctor` lists what is missing and how to get it.
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  need=()
  for p in slapd ldap-utils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/commonscloud/target}"
cargo build --locked --release
bin="$CARGO_TARGET_DIR/release/commonscloud"
dir="${COMMONSCLOUD_DEMO_DIR:-$PWD/.commonscloud-demo}"
"$bin" demo --dir "$dir" --no-serve
echo
"$bin" --config "$dir/appliance.toml" doctor || true
echo
exec "$bin" demo --dir "$dir"
