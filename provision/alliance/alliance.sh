#!/usr/bin/env bash
# The alliance's directory: a plain OpenLDAP provider (Debian's slapd) that
# every appliance syncs from and writes to. See README.md beside this script.
#
#   alliance.sh init --dir DIR --suffix SUFFIX --name NAME --listen URL [--listen URL…]
#                    [--tls-cert CHAIN.pem --tls-key KEY.pem]   (ldaps://, and StartTLS on ldap://)
#   alliance.sh start --dir DIR
#   alliance.sh stop --dir DIR
#   alliance.sh add-appliance --dir DIR --collective SLUG --collective-name NAME \
#                             --node HOSTNAME --password-file FILE
#   alliance.sh upgrade --dir DIR   (this release's rules and password policy,
#                                    for an alliance an older release made)
#
# The LDIF comes from `commonscloud alliance provider …` (the same schema,
# ACL and overlay code the appliances use); slapd and ldap-utils do the rest.
# Run it as the user slapd should run as: that user's SASL EXTERNAL identity
# over ldapi is the directory's root, so no root password exists.
set -euo pipefail

die() { printf 'alliance.sh: %s\n' "$*" >&2; exit 2; }
need() { command -v "$1" >/dev/null || die "\`$1\` not found: install it with \`apt install $2\`"; }

CC="${COMMONSCLOUD:-commonscloud}"
cmd="${1:-}"
[ -n "$cmd" ] || die "usage: alliance.sh init|start|stop|add-appliance … (see the header of this script)"
shift
dir='' suffix='' name='' slug='' cname='' node='' pwfile='' tls_cert='' tls_key=''
listen=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --suffix) suffix="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --listen) listen+=("$2"); shift 2 ;;
    --collective) slug="$2"; shift 2 ;;
    --collective-name) cname="$2"; shift 2 ;;
    --node) node="$2"; shift 2 ;;
    --password-file) pwfile="$2"; shift 2 ;;
    --tls-cert) tls_cert="$(realpath "$2")"; shift 2 ;;
    --tls-key) tls_key="$(realpath "$2")"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[ -n "$dir" ] || die "--dir is required: the directory that holds the alliance's slapd"
dir="$(realpath -m "$dir")"
ldapi="ldapi://$(printf '%s' "$dir/run/ldapi" | sed 's|/|%2F|g')"
slapd_bin="$(command -v slapd || echo /usr/sbin/slapd)"
[ -x "$slapd_bin" ] || die "\`slapd\` not found: install it with \`apt install slapd\`"
slapadd_bin="$(command -v slapadd || echo /usr/sbin/slapadd)"

running_pid() {
  [ -f "$dir/run/slapd.pid" ] || return 1
  local pid; pid="$(cat "$dir/run/slapd.pid")"
  kill -0 "$pid" 2>/dev/null && printf '%s' "$pid"
}

case "$cmd" in
  init)
    [ -n "$suffix" ] || die "--suffix is required, e.g. dc=alliance,dc=example,dc=net"
    [ -n "$name" ] || die "--name is required: the alliance's name"
    [ "${#listen[@]}" -gt 0 ] || die "--listen is required, e.g. ldaps://0.0.0.0:636 or ldap://127.0.0.1:3890"
    [ ! -e "$dir/slapd.d" ] || die "$dir/slapd.d exists already: the alliance is set up; nothing was changed"
    need ldapmodify ldap-utils
    mkdir -p "$dir/data" "$dir/run"
    chmod 0700 "$dir" "$dir/data"
    root="gidNumber=$(id -g)+uidNumber=$(id -u),cn=peercred,cn=external,cn=auth"
    tls=()
    if [ -n "$tls_cert$tls_key" ]; then
      if [ ! -r "$tls_cert" ] || [ ! -r "$tls_key" ]; then
        die "--tls-cert and --tls-key go together and must be readable files"
      fi
      tls=(--tls-cert "$tls_cert" --tls-key "$tls_key")
    elif printf '%s\n' "${listen[@]}" | grep -q '^ldaps://'; then
      die "an ldaps:// listener needs --tls-cert and --tls-key"
    fi
    "$CC" alliance provider config --suffix "$suffix" --data-dir "$dir/data" \
      --run-dir "$dir/run" --root-dn "$root" "${tls[@]}" >"$dir/config.ldif"
    "$CC" alliance provider base --suffix "$suffix" --name "$name" >"$dir/base.ldif"
    mkdir -p "$dir/slapd.d.new"
    "$slapadd_bin" -n0 -F "$dir/slapd.d.new" -l "$dir/config.ldif" >/dev/null
    "$slapadd_bin" -n1 -F "$dir/slapd.d.new" -l "$dir/base.ldif" -w >/dev/null
    mv "$dir/slapd.d.new" "$dir/slapd.d"
    printf '%s\n' "${listen[@]}" >"$dir/listen"
    echo "alliance directory made in $dir (suffix $suffix); start it with: alliance.sh start --dir $dir"
    ;;
  start)
    [ -e "$dir/slapd.d" ] || die "$dir holds no alliance directory: run \`alliance.sh init\` first"
    if pid="$(running_pid)"; then echo "slapd already runs (pid $pid)"; exit 0; fi
    mapfile -t urls <"$dir/listen"
    "$slapd_bin" -F "$dir/slapd.d" -h "$ldapi ${urls[*]}" -d none >>"$dir/slapd.log" 2>&1 &
    for _ in $(seq 1 100); do
      if ldapsearch -Q -Y EXTERNAL -H "$ldapi" -s base -b "" 1.1 >/dev/null 2>&1; then
        echo "slapd serves ${urls[*]} (pid $(cat "$dir/run/slapd.pid"))"
        exit 0
      fi
      kill -0 $! 2>/dev/null || die "slapd did not start: $(tail -n 5 "$dir/slapd.log")"
      sleep 0.1
    done
    die "slapd does not answer on $ldapi: see $dir/slapd.log"
    ;;
  stop)
    if pid="$(running_pid)"; then
      kill "$pid"
      while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
      echo "slapd stopped"
    else
      echo "slapd was not running"
    fi
    ;;
  add-appliance)
    [ -n "$slug" ] || die "--collective is required: the slug of the appliance's collective"
    [ -n "$cname" ] || die "--collective-name is required: the collective's display name"
    [ -n "$node" ] || die "--node is required: the appliance's console hostname (its node name)"
    [ -n "$pwfile" ] || die "--password-file is required: where the appliance account's password is (made 0600 if missing)"
    running_pid >/dev/null || die "slapd is not running: \`alliance.sh start --dir $dir\` first"
    suffix="$(ldapsearch -Q -LLL -Y EXTERNAL -H "$ldapi" -s base -b "" namingContexts | sed -n 's/^namingContexts: //p' | head -n1)"
    [ -n "$suffix" ] || die "cannot read the suffix over $ldapi"
    account="cn=$node,ou=appliances,$suffix"
    if ldapsearch -Q -LLL -Y EXTERNAL -H "$ldapi" -s base -b "$account" 1.1 >/dev/null 2>&1; then
      echo "appliance $node was added before: its rules stay as they are; setting its password"
    else
      "$CC" alliance provider appliance --suffix "$suffix" --collective "$slug" \
        --collective-name "$cname" --node "$node" >"$dir/appliance-$node.ldif"
      # The rules first, then the account, then the collective's entries;
      # those of a collective the alliance already holds are kept as they are.
      out="$(ldapmodify -Q -Y EXTERNAL -H "$ldapi" -c -f "$dir/appliance-$node.ldif" 2>&1)" ||
        if printf '%s\n' "$out" | grep '^ldap_' | grep -qv 'Already exists'; then
          die "adding $node failed: $out"
        fi
    fi
    if [ ! -s "$pwfile" ]; then
      (umask 077; head -c 32 /dev/urandom | base64 | tr -d '\n=' >"$pwfile")
    fi
    chmod 0600 "$pwfile"
    ldappasswd -Q -Y EXTERNAL -H "$ldapi" -T "$pwfile" "$account" >/dev/null
    echo "appliance $node added for collective $slug: it binds as $account with the password in $pwfile"
    echo "on the appliance: commonscloud alliance join --url <this directory's URL> --bind-dn '$account' --password-file <a copy of $pwfile> (add --starttls for an ldap:// URL)"
    ;;
  upgrade)
    running_pid >/dev/null || die "slapd is not running: \`alliance.sh start --dir $dir\` first"
    suffix="$(ldapsearch -Q -LLL -Y EXTERNAL -H "$ldapi" -s base -b "" namingContexts | sed -n 's/^namingContexts: //p' | head -n1)"
    [ -n "$suffix" ] || die "cannot read the suffix over $ldapi"
    # Every appliance with the collective homed at it: the rules are written
    # anew, so one whose collective cannot be found stops the upgrade.
    pairs=()
    while read -r n; do
      [ -n "$n" ] || continue
      s="$(ldapsearch -Q -LLL -o ldif-wrap=no -Y EXTERNAL -H "$ldapi" -s one -b "ou=collectives,$suffix" \
        "(commonsHomeNode=$n)" ou | sed -n 's/^ou: //p' | head -n1)"
      [ -n "$s" ] || die "appliance $n has no collective homed at it: nothing was changed"
      pairs+=(--appliance "$s=$n")
    done < <(ldapsearch -Q -LLL -o ldif-wrap=no -Y EXTERNAL -H "$ldapi" -s one -b "ou=appliances,$suffix" cn | sed -n 's/^cn: //p')
    "$CC" alliance provider upgrade --suffix "$suffix" "${pairs[@]}" >"$dir/upgrade.ldif"
    ldapmodify -Q -Y EXTERNAL -H "$ldapi" -f "$dir/upgrade.ldif" >/dev/null
    echo "alliance upgraded: the rules of $(( ${#pairs[@]} / 2 )) appliance(s) and the password policy are this release's"
    ;;
  *) die "unknown command $cmd: init, start, stop, add-appliance or upgrade" ;;
esac
