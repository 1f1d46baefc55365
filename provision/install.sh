#!/usr/bin/env bash
# Install the CommonsCloud appliance on Debian 12/13 or Raspberry Pi OS
# (amd64 or arm64), from a source checkout or a release tarball laid out like
# one: units/, hardware/, provision/install.sh, provision/appliance.example.toml.
#
# Idempotent: a file is copied only when its content differs, and every action
# prints one line: `installed X`, `unchanged X`, `would install X`, ...
# Run `install.sh --help` for the options.
set -euo pipefail

# Directories this script creates must be readable by the commonscloud user,
# whatever umask sudo hands down.
umask 022

readonly APT_PACKAGES=(docker.io slapd ldap-utils restic)
readonly UNIT=commonscloud.service
# The data plane, its own unit: restarting the supervisor cuts no upload.
readonly FRONT_DOOR=commonscloud-front-door.service
readonly CONFIG=/etc/commonscloud/appliance.toml

usage() {
	cat <<'EOF'
Usage: install.sh [--dry-run] [--binary PATH] [--root DIR]

Install the CommonsCloud appliance: the Debian packages it needs (docker.io,
slapd, ldap-utils, restic), the commonscloud binary, its systemd units (the
supervisor and the front door), the commonscloud user and directories, the
example configuration and the hardware profiles. Safe to run again: unchanged
files are left alone, and an existing /etc/commonscloud/appliance.toml is never
touched. A running unit is restarted when its binary or unit file changed (the
supervisor first, the front door last); a stopped one stays stopped.

Options:
  --dry-run      print every action it would take; change nothing (no root needed)
  --binary PATH  the commonscloud binary to install (default: commonscloud next
                 to this script, else ./target/release/commonscloud, else
                 $CARGO_TARGET_DIR/release/commonscloud)
  --root DIR     stage into DIR instead of /: apt and systemctl are skipped,
                 systemd-sysusers and systemd-tmpfiles run with --root DIR
  -h, --help     show this help
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() {
	printf 'install.sh: error: %s\n' "$*" >&2
	exit 1
}

DRY_RUN=0
BINARY=""
ROOT=""
while (($#)); do
	case $1 in
	--dry-run) DRY_RUN=1 ;;
	--binary)
		(($# >= 2)) || die "--binary needs a PATH"
		BINARY=$2
		shift
		;;
	--binary=*) BINARY=${1#*=} ;;
	--root)
		(($# >= 2)) || die "--root needs a DIR"
		ROOT=$2
		shift
		;;
	--root=*) ROOT=${1#*=} ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		die "unknown argument: $1"
		;;
	esac
	shift
done

if [[ -n $ROOT ]]; then
	[[ -n ${ROOT//\//} ]] || ROOT="" # --root / is the live system
fi
if [[ -n $ROOT ]]; then
	# Absolute, and not created yet: a refused run leaves nothing behind.
	ROOT=$(realpath -m "$ROOT")
fi

if ((!DRY_RUN)) && [[ -z $ROOT ]] && ((EUID != 0)); then
	die "must run as root (try: sudo $0), or with --dry-run or --root DIR"
fi

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
SRC_ROOT=$(cd "$SCRIPT_DIR/.." && pwd -P)

# --- checks: the system ------------------------------------------------------

# A staged root is judged by its own os-release when it has one.
OS_RELEASE=/etc/os-release
if [[ -n $ROOT && -r $ROOT/etc/os-release ]]; then
	OS_RELEASE=$ROOT/etc/os-release
fi
[[ -r $OS_RELEASE ]] || die "cannot read $OS_RELEASE: CommonsCloud installs on Debian 12/13 or Raspberry Pi OS"

# Read KEY from os-release without sourcing it: it may come from a staged tree.
os_field() {
	local line value
	while IFS= read -r line || [[ -n $line ]]; do
		if [[ $line == "$1="* ]]; then
			value=${line#*=}
			value=${value#[\"\']}
			value=${value%[\"\']}
			printf '%s' "$value"
			return 0
		fi
	done <"$OS_RELEASE"
}

OS_ID=$(os_field ID)
OS_LIKE=$(os_field ID_LIKE)
OS_VERSION=$(os_field VERSION_ID)
OS_NAME=$(os_field PRETTY_NAME)
case " $OS_ID $OS_LIKE " in
*" debian "* | *" raspbian "*) ;;
*) die "${OS_NAME:-this system} (ID=${OS_ID:-unknown}) is not Debian: CommonsCloud installs on Debian 12/13 or Raspberry Pi OS" ;;
esac
case "$OS_ID:$OS_VERSION" in
debian:12 | debian:13 | raspbian:12 | raspbian:13) ;;
*) warn "${OS_NAME:-$OS_ID} is not Debian 12/13 or Raspberry Pi OS: untested, going on" ;;
esac

command -v dpkg >/dev/null || die "dpkg not found: CommonsCloud installs on Debian 12/13 or Raspberry Pi OS"
ARCH=$(dpkg --print-architecture)
case $ARCH in
amd64) ELF_MACHINE=3e00 ;; # e_machine, little-endian
arm64) ELF_MACHINE=b700 ;;
*) die "unsupported architecture '$ARCH': CommonsCloud needs amd64 or arm64 (on a Raspberry Pi, the 64-bit Raspberry Pi OS)" ;;
esac

# --- checks: what to install -------------------------------------------------

if [[ -n $BINARY ]]; then
	[[ -f $BINARY && -x $BINARY ]] || die "--binary $BINARY: not an executable file"
else
	candidates=("$SCRIPT_DIR/commonscloud" "./target/release/commonscloud")
	if [[ $SRC_ROOT/target != "$PWD/target" ]]; then
		candidates+=("$SRC_ROOT/target/release/commonscloud")
	fi
	if [[ -n ${CARGO_TARGET_DIR:-} ]]; then
		candidates+=("$CARGO_TARGET_DIR/release/commonscloud")
	fi
	for candidate in "${candidates[@]}"; do
		if [[ -f $candidate && -x $candidate ]]; then
			BINARY=$candidate
			break
		fi
	done
	[[ -n $BINARY ]] || die "no commonscloud binary found (looked for ${candidates[*]}): build it with 'cargo build --release' or pass --binary PATH"
fi
# A binary cross-built for the other architecture would only fail at start.
header=$(od -An -tx1 -N20 "$BINARY" | tr -d ' \n')
if [[ ${header:0:8} != 7f454c46 || ${header:36:4} != "$ELF_MACHINE" ]]; then
	die "$BINARY is not a Linux $ARCH executable: build it for this system"
fi

SERVICE_SRC=$SRC_ROOT/units/commonscloud.service
FRONT_DOOR_SRC=$SRC_ROOT/units/commonscloud-front-door.service
SYSUSERS_SRC=$SRC_ROOT/units/commonscloud.sysusers.conf
TMPFILES_SRC=$SRC_ROOT/units/commonscloud.tmpfiles.conf
EXAMPLE_SRC=$SCRIPT_DIR/appliance.example.toml
for src in "$SERVICE_SRC" "$FRONT_DOOR_SRC" "$SYSUSERS_SRC" "$TMPFILES_SRC" "$EXAMPLE_SRC"; do
	[[ -f $src ]] || die "$src is missing: run install.sh from a CommonsCloud source tree or release tarball"
done
shopt -s nullglob
HARDWARE_SRC=("$SRC_ROOT"/hardware/*.toml)
DOCS_SRC=("$SRC_ROOT"/docs/*.md)
shopt -u nullglob
((${#HARDWARE_SRC[@]})) || die "$SRC_ROOT/hardware/ has no *.toml hardware profiles"

if ((DRY_RUN)); then
	say "# dry run: nothing is changed"
fi
if [[ -n $ROOT ]]; then
	say "# staging into $ROOT"
fi

# --- Debian packages ---------------------------------------------------------

pkg_installed() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

if [[ -n $ROOT ]]; then
	for pkg in "${APT_PACKAGES[@]}"; do
		say "skipped package $pkg (--root: apt is not run)"
	done
	say "skipped slapd.service (--root: systemctl is not run)"
else
	missing=()
	for pkg in "${APT_PACKAGES[@]}"; do
		if pkg_installed "$pkg"; then
			say "unchanged package $pkg"
		elif [[ $pkg == docker.io ]] && pkg_installed docker-ce; then
			# Docker's own packages conflict with docker.io and serve as well.
			say "unchanged package $pkg (docker-ce is installed)"
		elif ((DRY_RUN)); then
			say "would install package $pkg"
		else
			missing+=("$pkg")
		fi
	done
	if ((${#missing[@]})); then
		if [[ " ${missing[*]} " == *" slapd "* ]]; then
			# The appliance runs its own slapd with its own database: let the
			# distribution's package create none.
			echo 'slapd slapd/no_configuration boolean true' | debconf-set-selections
		fi
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
		for pkg in "${missing[@]}"; do
			pkg_installed "$pkg" || die "apt-get did not install $pkg"
			say "installed package $pkg"
		done
	fi

	# The distribution's slapd would serve a second, default directory on
	# port 389; the appliance supervises its own instance.
	if ! pkg_installed slapd; then
		say "would disable slapd.service"
		say "would stop slapd.service"
	else
		if systemctl is-enabled --quiet slapd.service 2>/dev/null; then
			if ((DRY_RUN)); then
				say "would disable slapd.service"
			else
				systemctl disable --quiet slapd.service 2>/dev/null
				say "disabled slapd.service (the appliance runs its own slapd)"
			fi
		else
			say "unchanged slapd.service (disabled)"
		fi
		if systemctl is-active --quiet slapd.service 2>/dev/null; then
			if ((DRY_RUN)); then
				say "would stop slapd.service"
			else
				systemctl stop slapd.service
				say "stopped slapd.service"
			fi
		else
			say "unchanged slapd.service (not running)"
		fi
	fi
fi

# --- files -------------------------------------------------------------------

UNITS_CHANGED=0
# The binary or a unit changed: running units move to the new one.
RESTART_NEEDED=0

# install_file SRC DEST MODE: copy SRC to DEST (a path on the target system)
# when the content differs, atomically, then make sure of the mode.
install_file() {
	local src=$1 dest=$2 mode=$3 target=$ROOT$2 tmp
	if [[ -f $target ]] && cmp -s "$src" "$target"; then
		if [[ $(stat -L -c %a "$target") == "$mode" ]]; then
			say "unchanged $dest"
		elif ((DRY_RUN)); then
			say "would chmod $mode $dest"
		else
			chmod "$mode" "$target"
			say "updated mode $mode $dest"
		fi
		return 0
	fi
	if [[ $dest == /usr/lib/systemd/system/* ]]; then
		UNITS_CHANGED=1
		RESTART_NEEDED=1
	fi
	[[ $dest != /usr/bin/commonscloud ]] || RESTART_NEEDED=1
	if ((DRY_RUN)); then
		say "would install $dest"
		return 0
	fi
	mkdir -p "$(dirname "$target")"
	# Same directory, then rename: a running binary is never half-written.
	tmp=$(mktemp "$target.XXXXXX")
	cp "$src" "$tmp"
	chmod "$mode" "$tmp"
	mv -f "$tmp" "$target"
	say "installed $dest"
}

install_file "$BINARY" /usr/bin/commonscloud 755
install_file "$SERVICE_SRC" /usr/lib/systemd/system/$UNIT 644
install_file "$FRONT_DOOR_SRC" /usr/lib/systemd/system/$FRONT_DOOR 644
install_file "$SYSUSERS_SRC" /usr/lib/sysusers.d/commonscloud.conf 644
install_file "$TMPFILES_SRC" /usr/lib/tmpfiles.d/commonscloud.conf 644
install_file "$EXAMPLE_SRC" /usr/share/commonscloud/appliance.example.toml 644
for src in "${HARDWARE_SRC[@]}"; do
	install_file "$src" "/usr/share/commonscloud/hardware/${src##*/}" 644
done
if [[ -f $SRC_ROOT/README.md ]]; then
	install_file "$SRC_ROOT/README.md" /usr/share/doc/commonscloud/README.md 644
fi
for src in "${DOCS_SRC[@]}"; do
	install_file "$src" "/usr/share/doc/commonscloud/${src##*/}" 644
done

# --- user and directories ----------------------------------------------------

# Read from the target's files rather than NSS: a staged root has its own.
name_to_id() { # FILE NAME
	[[ $2 == root ]] && {
		echo 0
		return 0
	}
	awk -F: -v n="$2" '$1 == n { print $3; exit }' "$ROOT$1" 2>/dev/null || true
}
user_ok() {
	local docker_line
	[[ -n $(name_to_id /etc/passwd commonscloud) && -n $(name_to_id /etc/group commonscloud) ]] || return 1
	docker_line=$(grep '^docker:' "$ROOT/etc/group" 2>/dev/null) || return 1
	[[ ",${docker_line##*:}," == *",commonscloud,"* ]]
}
# The front door's own user and group (see docs/security.md).
door_user_ok() {
	[[ -n $(name_to_id /etc/passwd "$DOOR_USER") && -n $(name_to_id /etc/group "$DOOR_USER") ]]
}
readonly DOOR_USER=commonscloud-front-door

if user_ok && door_user_ok; then
	say "unchanged user commonscloud"
	say "unchanged user $DOOR_USER"
elif ((DRY_RUN)); then
	user_ok || say "would create user commonscloud (systemd-sysusers)"
	door_user_ok || say "would create user $DOOR_USER (systemd-sysusers)"
else
	had_user=$(name_to_id /etc/passwd commonscloud)
	had_door=$(name_to_id /etc/passwd "$DOOR_USER")
	mkdir -p "$ROOT/etc"
	out=$(systemd-sysusers ${ROOT:+--root "$ROOT"} "$ROOT/usr/lib/sysusers.d/commonscloud.conf" 2>&1) ||
		die "systemd-sysusers failed: $out"
	user_ok || die "systemd-sysusers did not create user commonscloud in group docker: $out"
	door_user_ok || die "systemd-sysusers did not create user $DOOR_USER: $out"
	if [[ -n $had_user ]]; then
		say "updated user commonscloud (member of docker)"
	else
		say "created user commonscloud (member of docker)"
	fi
	if [[ -n $had_door ]]; then
		say "unchanged user $DOOR_USER"
	else
		say "created user $DOOR_USER"
	fi
fi

# dir_ok PATH MODE USER GROUP: the directory exists as the tmpfiles.d line says.
dir_ok() {
	local target=$ROOT$1 want_mode actual
	[[ -d $target && ! -L $target ]] || return 1
	want_mode=$(printf '%o' "$((8#$2))")
	actual=$(stat -c '%a %u %g' "$target")
	[[ $actual == "$want_mode $(name_to_id /etc/passwd "$3") $(name_to_id /etc/group "$4")" ]]
}

dirs_to_fix=()
while read -r type path mode owner group _; do
	[[ $type == d ]] || continue
	if dir_ok "$path" "$mode" "$owner" "$group"; then
		say "unchanged directory $path"
	elif ((DRY_RUN)); then
		if [[ -e $ROOT$path ]]; then
			say "would update directory $path ($mode $owner:$group)"
		else
			say "would create directory $path ($mode $owner:$group)"
		fi
	else
		existed=0
		[[ ! -e $ROOT$path ]] || existed=1
		dirs_to_fix+=("$existed $path $mode $owner $group")
	fi
done < <(grep -v '^[[:space:]]*\(#\|$\)' "$TMPFILES_SRC")
if ((${#dirs_to_fix[@]})); then
	out=$(systemd-tmpfiles ${ROOT:+--root "$ROOT"} --create "$ROOT/usr/lib/tmpfiles.d/commonscloud.conf" 2>&1) ||
		die "systemd-tmpfiles failed: $out"
	for entry in "${dirs_to_fix[@]}"; do
		read -r existed path mode owner group <<<"$entry"
		dir_ok "$path" "$mode" "$owner" "$group" || die "systemd-tmpfiles did not set up $path ($mode $owner:$group): $out"
		if ((existed)); then
			say "updated directory $path ($mode $owner:$group)"
		else
			say "created directory $path ($mode $owner:$group)"
		fi
	done
fi

if [[ -e $ROOT$CONFIG ]]; then
	say "unchanged $CONFIG (an existing configuration is never overwritten)"
else
	say "absent $CONFIG (write it with: commonscloud init)"
fi

# --- systemd -----------------------------------------------------------------

if [[ -n $ROOT ]]; then
	say "skipped systemctl daemon-reload (--root)"
	for unit in "$UNIT" "$FRONT_DOOR"; do
		say "skipped systemctl enable $unit (--root)"
	done
else
	if [[ ! -d /run/systemd/system ]]; then
		say "skipped systemctl daemon-reload (systemd is not running)"
	elif ((DRY_RUN)); then
		say "would run systemctl daemon-reload"
	elif ((UNITS_CHANGED)) ||
		[[ $(systemctl show -P NeedDaemonReload $UNIT 2>/dev/null) == yes ]] ||
		[[ $(systemctl show -P NeedDaemonReload $FRONT_DOOR 2>/dev/null) == yes ]]; then
		systemctl daemon-reload
		say "reloaded systemd units"
	else
		say "unchanged systemd units (no reload needed)"
	fi
	for unit in "$UNIT" "$FRONT_DOOR"; do
		if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
			say "unchanged $unit (enabled)"
		elif ((DRY_RUN)); then
			say "would enable $unit"
		else
			systemctl enable --quiet "$unit"
			say "enabled $unit"
		fi
	done
	# The supervisor first, the front door last: it drains open requests
	# (up to 30 s) before the new binary takes the ports. Only what runs.
	if ((RESTART_NEEDED)); then
		for unit in "$UNIT" "$FRONT_DOOR"; do
			if ! systemctl is-active --quiet "$unit" 2>/dev/null; then
				say "unchanged $unit (not running)"
			elif ((DRY_RUN)); then
				say "would restart $unit"
			else
				systemctl try-restart "$unit"
				say "restarted $unit"
			fi
		done
	fi
fi

cat <<EOF

Next steps:
  1. commonscloud init               # writes $CONFIG
  2. systemctl start $UNIT $FRONT_DOOR
  3. commonscloud doctor             # checks the configuration, Docker, slapd
EOF
