#!/usr/bin/env bash
# Builds a test image from Debian's own packages and prints its tag:
#
#   images/testing/debian-image.sh postgres:15   # bookworm's postgresql-15
#   images/testing/debian-image.sh postgres:17   # trixie's postgresql-17 + pgvector
#   images/testing/debian-image.sh redis         # bookworm's redis-server
#
# The root filesystem is made with mmdebstrap (essential packages plus the
# image's own, without docs, man pages, translations or apt lists), then
# `docker import`ed with the upstream image's settings (entrypoint, command,
# environment, volume, stop signal). No registry is involved.
#
# The tag is `commonscloud-test/<name>:<variant>-<hash>`, the hash covering
# this script (suites, package lists, hooks) and the image's entrypoint: an
# unchanged image is built once per machine and reused by every later run.
# Concurrent callers wait for each other on a lock file per tag. Images of
# the same name from other sources, built more than an hour ago, are
# removed after a build (one still in use stays).
#
# Needs root (mmdebstrap's root mode), mmdebstrap, the docker CLI and the
# apt mirror this machine uses (read from /etc/apt/sources.list*).
# The log goes to stderr; stdout carries only the tag.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"
LABEL=org.commonscloud.testimage
LABEL_SOURCE=org.commonscloud.testimage.source

usage() {
  echo "usage: $0 postgres:15|postgres:17|redis" >&2
  exit 2
}

# What each image is made of. Suites and package lists live here, so they
# are part of the hash.
describe() {
  case "$1" in
    postgres:15)
      dir=postgres major=15 suite=bookworm
      # bookworm has no postgresql-15-pgvector (trixie's 17 has).
      packages=(postgresql-15 xz-utils zstd)
      ;;
    postgres:17)
      dir=postgres major=17 suite=trixie
      packages=(postgresql-17 postgresql-17-pgvector xz-utils zstd)
      ;;
    redis)
      dir=redis major='' suite=bookworm
      packages=(redis-server)
      ;;
    *) usage ;;
  esac
  repo="commonscloud-test/${1%%:*}"
  variant=${major:-latest}
}

# ---- hooks, run by mmdebstrap with the root directory as $2 ------------------

# After the essential packages, before the image's own: fixed ids for the
# service users (999, as upstream), so that a volume keeps its owner across
# images (postgres 15 and 17 share one for upgrades). The packages' own
# `adduser --system` then finds the user there.
hook_users() {
  local root=$1 user=$2 home=$3 shell=$4
  printf '%s:x:999:\n' "$user" >>"$root/etc/group"
  printf '%s:x:999:999:%s:%s:%s\n' "$user" "$user" "$home" "$shell" >>"$root/etc/passwd"
  if [ -e "$root/etc/shadow" ]; then
    printf '%s:*:19000:0:99999:7:::\n' "$user" >>"$root/etc/shadow"
  fi
}

hook_customize() {
  local root=$1 name=$2
  describe "$name"
  install -m 0755 "$here/$dir/docker-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
  case "$dir" in
    postgres)
      # The Debian package made a "main" cluster; the image makes its own.
      rm -rf "$root/etc/postgresql/$major" "$root/var/lib/postgresql/$major"
      # Listen on every address, as upstream's sample config says.
      sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" \
        "$root/usr/share/postgresql/$major/postgresql.conf.sample"
      grep -q "^listen_addresses = '\*'" "$root/usr/share/postgresql/$major/postgresql.conf.sample"
      install -d -m 0755 "$root/docker-entrypoint-initdb.d"
      install -d -m 3777 -o 999 -g 999 "$root/var/run/postgresql"
      install -d -m 1777 -o 999 -g 999 "$root/var/lib/postgresql/data"
      ;;
    redis)
      install -d -m 0755 -o 999 -g 999 "$root/data"
      # The official image has no config file: one given at start is the
      # user's own (Debian's would daemonize and log to a file).
      rm -f "$root/etc/redis/redis.conf" "$root/etc/redis/sentinel.conf"
      ;;
  esac
  # What a container never needs.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/var/log/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
}

case "${1:-}" in
  --hook-users) shift; hook_users "$@"; exit 0 ;;
  --hook-customize) shift; hook_customize "$@"; exit 0 ;;
  "" | -*) usage ;;
esac

# ---- the build ---------------------------------------------------------------

name=$1
describe "$name"
hash=$( {
  printf '%s\n' "$name"
  cat "$self" "$here/$dir/docker-entrypoint.sh"
} | sha256sum | cut -c1-12)
tag="$repo:$variant-$hash"

have() { docker image inspect "$tag" >/dev/null 2>&1; }
if have; then
  echo "$tag"
  exit 0
fi

lock_dir=${TMPDIR:-/tmp}/commonscloud-test-images
mkdir -p "$lock_dir"
exec 9>"$lock_dir/${tag//[\/:]/_}.lock"
flock 9
if have; then
  echo "$tag"
  exit 0
fi

for tool in mmdebstrap docker; do
  command -v "$tool" >/dev/null || {
    echo "$0: $tool is missing (apt install mmdebstrap; Docker Engine)" >&2
    exit 1
  }
done
if [ "$(id -u)" != 0 ]; then
  echo "$0: run as root (mmdebstrap builds the root filesystem in root mode)" >&2
  exit 1
fi

# The mirror this machine's apt uses (deb822 or one-line format).
sources=(/etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list)
uris=$(grep -hsE '^[[:space:]]*(URIs:|deb )' "${sources[@]}" |
  grep -oE 'https?://[^[:space:]]+' | sed 's!/*$!!' || true)
mirror=$(grep -E '/debian$' <<<"$uris" | head -1 || true)
security=$(grep -E '/debian-security$' <<<"$uris" | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
lists=("deb $mirror $suite main" "deb $mirror $suite-updates main")
if [ -n "$security" ]; then
  lists+=("deb $security $suite-security main")
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/commonscloud-test-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

case "$dir" in
  postgres) users=(postgres /var/lib/postgresql /bin/bash) ;;
  redis) users=(redis /var/lib/redis /usr/sbin/nologin) ;;
esac

started=$(date +%s)
echo "building $tag from $suite (${packages[*]}) with $mirror" >&2
excludes=()
for p in '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*' \
  '/usr/share/lintian/*' \
  '/usr/share/i18n/*' '/usr/lib/*/libLLVM*' '/usr/lib/*/libz3.so*' \
  '/usr/lib/postgresql/*/lib/llvmjit*' '/usr/lib/postgresql/*/lib/bitcode/*'; do
  excludes+=("--dpkgopt=path-exclude=$p")
done
mmdebstrap --variant=essential --mode=root \
  --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
  --include="$(
    IFS=,
    echo "${packages[*]}"
  )" \
  --aptopt='APT::Install-Recommends "false"' \
  "${excludes[@]}" \
  --essential-hook="'$self' --hook-users \"\$1\" ${users[*]}" \
  --customize-hook="'$self' --hook-customize \"\$1\" '$name'" \
  "$suite" "$work/rootfs.tar" "${lists[@]}" >&2
echo "root filesystem made in $(($(date +%s) - started)) s" >&2

# The image: the root filesystem with the upstream image's settings.
changes=(--change "LABEL $LABEL=$name $LABEL_SOURCE=$hash" --change 'ENTRYPOINT ["docker-entrypoint.sh"]')
case "$dir" in
  postgres)
    changes+=(
      --change "ENV PATH=/usr/lib/postgresql/$major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
      --change "ENV PG_MAJOR=$major PGDATA=/var/lib/postgresql/data LANG=C.UTF-8"
      --change 'VOLUME /var/lib/postgresql/data'
      --change 'EXPOSE 5432'
      --change 'CMD ["postgres"]'
    )
    ;;
  redis)
    changes+=(
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
      --change 'WORKDIR /data'
      --change 'VOLUME /data'
      --change 'EXPOSE 6379'
      --change 'CMD ["redis-server"]'
    )
    ;;
esac
imported=$(docker import "${changes[@]}" "$work/rootfs.tar")
if [ "$dir" = postgres ]; then
  # Fast shutdown on `docker stop`, as upstream; `docker import` takes no
  # STOPSIGNAL, so one instruction of the classic builder adds it.
  printf 'FROM %s\nSTOPSIGNAL SIGINT\n' "$imported" >"$work/Dockerfile"
  rm "$work/rootfs.tar"
  DOCKER_BUILDKIT=0 docker build --quiet --tag "$tag" "$work" >/dev/null
else
  docker tag "$imported" "$tag"
fi
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "built $tag in $(($(date +%s) - started)) s, $((size / 1024 / 1024)) MiB" >&2

# Prune builds of this image from other sources, older than an hour.
hour_ago=$(($(date +%s) - 3600))
docker image ls --filter "label=$LABEL=$name" --format '{{.ID}} {{.Repository}}:{{.Tag}}' |
  while read -r id ref; do
    [ "$ref" = "$tag" ] && continue
    created=$(docker image inspect -f '{{.Created}}' "$id" 2>/dev/null) || continue
    if [ "$(date -d "$created" +%s)" -lt "$hour_ago" ]; then
      docker image rm "$ref" >/dev/null 2>&1 || true
    fi
  done
echo "$tag"
