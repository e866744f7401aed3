#!/bin/bash
# The floor of a 1-Hz protocol at N processes on this host (docs/benchmarks.md, "The floor"):
# builds floor.c, runs N processes that each wake on a 1-s timer, send a 200-byte frame on each of
# their TCP connections (loopback; each dials the next D processes, so the degree is 2 D) and read
# their neighbours' frames in one epoll loop; with "cg", each process in its own cgroup
# (cpu, cpuacct, memory, pids: floor/lab/rN, as deep as a lab router's). Prints the whole
# machine's busy clock ticks over 20 s (after 15 s to settle) and the processes' voluntary context
# switches per second. Usage: measure.sh N D [cg]   (as root for cg)
set -euo pipefail
cd "$(dirname "$0")"
N=${1:-1000}; D=${2:-2}; CG=${3:-}
out=$(mktemp -d)
trap 'pkill -x floor || true; while pgrep -x floor >/dev/null; do sleep 0.2; done; rm -rf "$out"; for c in cpu cpuacct memory pids; do [ -d /sys/fs/cgroup/$c/floor ] && find /sys/fs/cgroup/$c/floor -depth -type d -exec rmdir {} + 2>/dev/null; done; true' EXIT
clang -O2 -o "$out/floor" floor.c
if [ -n "$CG" ]; then for c in cpu cpuacct memory pids; do mkdir -p /sys/fs/cgroup/$c/floor/lab; done; fi
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat; }
b0=$(busy); sleep 20; idle=$(( $(busy) - b0 ))
"$out/floor" "$N" "$D" 41000 $CG & P=$!
sleep 15
cs() { local t=0; for c in $(pgrep -P $P); do t=$((t + $(awk '/^voluntary_ctxt_switches/ {print $2}' /proc/$c/status))); done; echo $t; }
b1=$(busy); c1=$(cs); sleep 20; b2=$(busy); c2=$(cs)
echo "N=$N degree=$((2 * D)) cgroups=${CG:-no}: machine busy $((b2 - b1)) ticks in 20 s (before starting: $idle); 2,000 ticks = one core; wake-ups per process per s: $(( (c2 - c1) / N / 20 ))"
