# Shared helpers for the hack/ scripts. Source it; it defines functions only.
# shellcheck shell=bash

# The repository root, whichever script sourced this file.
CRIUS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CRIUS_ROOT

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() {
	log "error: $*"
	exit "${DIE_STATUS:-1}"
}

# port_in_use PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port: prints a loopback TCP port nothing listens on (random, 20000-45000).
free_port() {
	local port tries
	for ((tries = 0; tries < 50; tries++)); do
		port=$((20000 + RANDOM % 25000))
		if ! port_in_use "$port"; then
			echo "$port"
			return 0
		fi
	done
	die "no free loopback port found"
}

# pid_alive PID: the process exists and is not a zombie.
pid_alive() {
	local state
	[[ -r "/proc/$1/stat" ]] || return 1
	state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
	[[ "$state" != "Z" && "$state" != "X" ]]
}

# stop_pid PID GRACE_SECONDS: SIGTERM, then SIGKILL if still alive after the grace.
stop_pid() {
	local pid="$1" grace="$2" i
	pid_alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < grace * 10; i++)); do
		pid_alive "$pid" || return 0
		sleep 0.1
	done
	log "pid $pid still running after ${grace}s, sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		pid_alive "$pid" || return 0
		sleep 0.1
	done
	log "pid $pid did not exit after SIGKILL"
}

# unmount_under DIR: unmounts every mount point at or below DIR, deepest first,
# in passes, since a mount point can carry several stacked mounts.
unmount_under() {
	local dir mp pass
	local -a points
	dir="$(realpath -m "$1")"
	for ((pass = 0; pass < 10; pass++)); do
		# Field 5 of mountinfo is the mount point, with spaces etc. octal-escaped.
		mapfile -t points < <(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' \
			/proc/self/mountinfo | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2- | uniq)
		((${#points[@]} > 0)) || return 0
		for mp in "${points[@]}"; do
			mp="$(printf '%b' "$mp")"
			umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
		done
	done
	log "warning: mounts left under $dir:"
	awk -v d="$dir" 'index($5, d) == 1 { print "  " $5 }' /proc/self/mountinfo >&2
}
