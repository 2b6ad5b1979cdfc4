# A private criusd for the suites that drive it (hack/critest,
# hack/kubelet-e2e): a loopback registry with the test images, a crius.toml
# whose registry mirrors send the upstream hosts there, criusd in a cgroup of
# its own, and the teardown of whatever it left. Source it after hack/lib.sh;
# it defines functions only.
#
# The functions share the caller's globals: work_dir (short: socket paths live
# below it), report_dir, registry_port, cgroup_parent, daemon_cgroup,
# criusd_pid, keep_report, and CRIUSD_LOG_LEVEL (default info).
# shellcheck shell=bash
# shellcheck disable=SC2154,SC2034 # the globals above belong to the caller

# Hosts the suites pull their images from; all are mirrored to the local registry.
MIRRORED_HOSTS=(registry.k8s.io gcr.io k8s.gcr.io docker.io registry-1.docker.io public.ecr.aws quay.io)

CRICTL="$CRIUS_ROOT/hack/bin/crictl"

find_criusd() {
	local candidate
	if [[ -n "${CRIUSD:-}" ]]; then
		[[ -x "$CRIUSD" ]] || die "CRIUSD=$CRIUSD is not an executable"
		echo "$CRIUSD"
		return
	fi
	for candidate in "$CRIUS_ROOT/target/release/criusd" "$CRIUS_ROOT/target/debug/criusd"; do
		if [[ -x "$candidate" ]]; then
			echo "$candidate"
			return
		fi
	done
	log "no criusd binary found: building it (cargo build -p crius --bin criusd)"
	(cd "$CRIUS_ROOT" && cargo build -q -p crius --bin criusd) >&2 || die "building criusd failed"
	echo "$CRIUS_ROOT/target/debug/criusd"
}

start_registry() {
	local port attempt
	for ((attempt = 0; attempt < 5; attempt++)); do
		port="$(free_port)"
		if "$CRIUS_ROOT/hack/registry" start --port "$port" --dir "$work_dir/registry"; then
			registry_port="$port"
			return 0
		fi
	done
	die "could not start the registry"
}

push_test_images() {
	log "pushing test images to 127.0.0.1:$registry_port"
	if ! (cd "$CRIUS_ROOT" && cargo run -q -p crius-test-images -- --registry "127.0.0.1:$registry_port") \
		>"$report_dir/test-images.log" 2>&1; then
		keep_report=1
		tail -n 30 "$report_dir/test-images.log" >&2
		die "pushing the test images failed (log: $report_dir/test-images.log)"
	fi
}

write_crius_config() {
	local host
	{
		cat <<EOF
socket = "$work_dir/crius.sock"
root = "$work_dir/root"
state = "$work_dir/state"
log_level = "info"
cgroup_driver = "cgroupfs"
cgroup_parent = "$cgroup_parent"

[cni]
conf_dir = "$work_dir/cni/net.d"
bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]

[streaming]
address = "127.0.0.1"
port = 0

[registry]
insecure = ["127.0.0.1:$registry_port"]

[registry.mirrors]
EOF
		for host in "${MIRRORED_HOSTS[@]}"; do
			printf '"%s" = ["http://127.0.0.1:%s"]\n' "$host" "$registry_port"
		done
	} >"$work_dir/crius.toml"
}

start_criusd() {
	local criusd="$1" i
	# criusd runs in a cgroup of its own so that teardown can find every
	# process it forked (shims outlive criusd by design).
	if [[ -d /sys/fs/cgroup/pids ]]; then
		daemon_cgroup="/sys/fs/cgroup/pids/$cgroup_parent-daemon"
		mkdir -p "$daemon_cgroup"
	fi
	# shellcheck disable=SC2016 # $1 and $@ belong to the inner shell
	# setsid: a Ctrl-C at the terminal must reach the suite, whose teardown
	# still needs criusd, not criusd itself. (A background job of a script
	# is no group leader, so setsid execs in place and $! stays criusd's.)
	setsid sh -c '[ -z "$1" ] || echo $$ >"$1/cgroup.procs"; shift; exec "$@"' sh "$daemon_cgroup" \
		"$criusd" --config "$work_dir/crius.toml" --socket "$work_dir/crius.sock" \
		--root "$work_dir/root" --state "$work_dir/state" --log-level "${CRIUSD_LOG_LEVEL:-info}" \
		>>"$report_dir/criusd.log" 2>&1 </dev/null &
	criusd_pid=$!
	log "criusd $criusd started (pid $criusd_pid), waiting for $work_dir/crius.sock"
	for ((i = 0; i < 600; i++)); do
		if ! pid_alive "$criusd_pid"; then
			keep_report=1
			die "criusd exited during start-up (log: $report_dir/criusd.log)"
		fi
		if [[ -S "$work_dir/crius.sock" ]] &&
			crictl version >/dev/null 2>&1; then
			crictl version 2>/dev/null | sed 's/^/  /' >&2
			return 0
		fi
		sleep 0.1
	done
	keep_report=1
	die "criusd did not answer Version on its socket within 60s"
}

crictl() {
	"$CRICTL" --config /dev/null --timeout 10s \
		--runtime-endpoint "unix://$work_dir/crius.sock" \
		--image-endpoint "unix://$work_dir/crius.sock" "$@"
}

# kill_leftover_processes: kills what criusd forked and left behind — shims
# (in criusd's own cgroup, or naming the work dir on their command line) and
# container processes (in the pods' cgroups) — and removes those cgroups.
kill_leftover_processes() {
	local pid hierarchy dir state_file
	local -a pids=() dirs=()
	for pid in /proc/[0-9]*; do
		pid="${pid#/proc/}"
		((pid == $$ || pid == BASHPID)) && continue
		# A process may exit between the glob and the read: that is no error.
		if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$work_dir/"; then
			pids+=("$pid")
		fi
	done
	if [[ -n "$daemon_cgroup" && -d "$daemon_cgroup" ]]; then
		dirs+=("$daemon_cgroup")
	fi
	if [[ -n "$cgroup_parent" ]]; then
		for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
			# cpu and cpuacct are symlinks to one hierarchy: visit it once.
			[[ -L "${hierarchy%/}" ]] && continue
			dir="${hierarchy%/}/$cgroup_parent"
			[[ -d "$dir" ]] && dirs+=("$dir")
		done
	fi
	for dir in "${dirs[@]}"; do
		# A frozen process cannot die: thaw first (cgroup v1 freezer).
		while IFS= read -r state_file; do
			echo THAWED 2>/dev/null >"$state_file"
		done < <(find "$dir" -name freezer.state 2>/dev/null)
		mapfile -t -O "${#pids[@]}" pids < <(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null)
	done
	if ((${#pids[@]} > 0)); then
		mapfile -t pids < <(printf '%s\n' "${pids[@]}" | sort -un)
		log "killing ${#pids[@]} process(es) criusd left behind: ${pids[*]}"
		kill -KILL "${pids[@]}" 2>/dev/null
		sleep 1
	fi
	for dir in "${dirs[@]}"; do
		find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
		[[ ! -d "$dir" ]] || log "warning: could not remove cgroup $dir"
	done
}
