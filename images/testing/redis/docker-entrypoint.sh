#!/bin/sh
# Entrypoint of the Redis test image (images/testing/debian-image.sh),
# written here to the official redis image's contract
# (images/testing/README.md lists it):
# - a first argument that is an option (`--requirepass x`) or a config file
#   (`/etc/redis/redis.conf`) means `redis-server <arguments>`;
# - redis-server runs as the redis user, in /data (the working directory),
#   whose files are handed to redis first; other commands run as given;
# - a umask of 0077 unless one other than 0022 was set;
# - protected mode off unless the arguments or the config file set it (the
#   official image builds redis with it off by default: Docker publishes
#   no port unless asked to).
set -e

case "${1:-}" in
  -* | *.conf) set -- redis-server "$@" ;;
esac

if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$(umask)" = 0022 ]; then
  umask 0077
fi

# As upstream: `redis-server [config file] --protected-mode no [the other
# arguments]`, so an argument that must stay last (`-`, the rest of the
# configuration on standard input) stays last.
if [ "${1:-}" = redis-server ]; then
  protected=
  for arg; do
    [ "$arg" = --protected-mode ] && protected=given
  done
  config=
  if [ -f "${2:-}" ]; then
    config=$2
    grep -Eq '^[[:space:]]*protected-mode[[:space:]]' "$config" && protected=given
  fi
  if [ -z "$protected" ]; then
    shift
    if [ -n "$config" ]; then
      shift
      set -- "$config" --protected-mode no "$@"
    else
      set -- --protected-mode no "$@"
    fi
    set -- redis-server "$@"
  fi
fi

exec "$@"
