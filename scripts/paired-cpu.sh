#!/usr/bin/env bash
# Paired CPU comparison of two wuosd binaries in the same lab.
#
# One lab's CPU varies more from one `lab up` to the next (45-63 % of a core for all daemons at
# random:1000, same binary, same topology, same host) than most code changes move it, so two
# labs, one per binary, compare lab-ups rather than binaries. Here both binaries run side by
# side in one lab: routers with an odd number run one, even ones the other. A second lab swaps
# them, so that neither gets the odd or the even half of the topology only.
#
# A change to the protocol itself (what one daemon sends changes what its neighbors do) cannot be
# paired that way: a new daemon among old neighbors receives what old ones send. MODE=alternate
# runs whole labs instead, one binary each, alternating old, new, old, new... (ROUNDS pairs), and
# compares the binaries' lab-ups: with the lab-up spread above, only a change well beyond it
# shows.
#
# usage: scripts/paired-cpu.sh OLD_WUOSD NEW_WUOSD [TOPOLOGY] [WINDOWS]
#   TOPOLOGY  a generator (default random:1000; seed 7, the bench's)
#   WINDOWS   20-s windows measured per lab (default 3)
# env: WUOS (the wuos binary, default target/release/wuos), LAB_ARGS (default
#      "--no-domains --no-tls"), SETTLE (seconds after lab up, default 60), OUT (JSON path),
#      MODE (paired, the default, or alternate), ROUNDS (alternate: lab pairs, default 3).
#
# Figure: each binary's daemons' CPU time (the sum of every thread's /proc/PID/task/TID/schedstat
# run time, ns, the scheduler's own clock) over a window, per daemon, in µs per second.
# The clock starts when one pass over every daemon's /proc files ends and stops when the second
# pass, 20 s later, ends; a daemon read early in a pass is read over a slightly different span
# (by the length of one pass, not measured and not corrected for). Needs root (lab up).
set -euo pipefail

old=${1:?usage: paired-cpu.sh OLD_WUOSD NEW_WUOSD [TOPOLOGY] [WINDOWS]}
new=${2:?usage: paired-cpu.sh OLD_WUOSD NEW_WUOSD [TOPOLOGY] [WINDOWS]}
topology=${3:-random:1000}
windows=${4:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
wuos=${WUOS:-$here/target/release/wuos}
lab_args=${LAB_ARGS:---no-domains --no-tls}
settle=${SETTLE:-60}
out=${OUT:-$here/bench-results/paired-cpu-$(date -u +%Y%m%dT%H%M%SZ).json}
lab=pairedcpu
mode=${MODE:-paired}
rounds=${ROUNDS:-3}
case "$mode" in
  paired) assignments="odd=old odd=new" ;;
  alternate) assignments=$(for _ in $(seq "$rounds"); do printf 'all=old all=new '; done) ;;
  *) echo "paired-cpu: MODE is paired or alternate, not $mode" >&2; exit 2 ;;
esac
old=$(realpath "$old")
new=$(realpath "$new")
[ "$old" != "$new" ] || { echo "paired-cpu: the two binaries are the same file" >&2; exit 2; }
for b in "$old" "$new" "$wuos"; do [ -x "$b" ] || { echo "paired-cpu: $b is not an executable" >&2; exit 2; }; done
command -v python3 >/dev/null || { echo "paired-cpu: needs python3" >&2; exit 2; }

tmp=$(mktemp -d)
cleanup() { "$wuos" lab down "$lab" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT

cat > "$tmp/measure.py" <<'EOF'
import json, os, re, sys, time
LAB = re.escape(sys.argv[2])
def snap():
    d = {}
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            if not re.search(rf'/labs/{LAB}/daemons/r\d+\.toml', open(f'/proc/{pid}/cmdline').read()):
                continue
            exe = os.readlink(f'/proc/{pid}/exe')
            run = sum(int(open(f'/proc/{pid}/task/{t}/schedstat').read().split()[0])
                      for t in os.listdir(f'/proc/{pid}/task'))
            d[pid] = (exe, run)
        except OSError:
            pass
    return d
a = snap(); t0 = time.monotonic(); time.sleep(float(sys.argv[1])); b = snap(); T = time.monotonic() - t0
by = {}
for pid, (exe, run) in b.items():
    if pid in a:
        s = by.setdefault(exe, [0, 0]); s[0] += run - a[pid][1]; s[1] += 1
print(json.dumps({exe: {"daemons": n, "per_daemon_us_per_s": ns / 1e3 / T / n,
                        "total_pct": ns / 1e9 / T * 100} for exe, (ns, n) in by.items()}))
EOF

rows=()
for assignment in $assignments; do
  case "$assignment" in
    odd=old) odd=$old; even=$new ;;
    odd=new) odd=$new; even=$old ;;
    all=old) odd=$old; even=$old ;;
    all=new) odd=$new; even=$new ;;
  esac
  cat > "$tmp/wuosd" <<EOF
#!/bin/bash
# Routers with an odd number run $odd, the others $even.
for a in "\$@"; do case "\$a" in *.toml) n=\$(basename "\$a" .toml); n=\${n#r};; esac; done
case "\$n" in *[13579]) exec "$odd" "\$@";; *) exec "$even" "\$@";; esac
EOF
  chmod +x "$tmp/wuosd"
  echo "paired-cpu: $topology, $assignment: lab up" >&2
  "$wuos" lab down "$lab" >/dev/null 2>&1 || true
  # shellcheck disable=SC2086
  WUOSD_EXE=$tmp/wuosd "$wuos" lab up "$topology" --seed 7 --name "$lab" $lab_args >&2
  echo "paired-cpu: settling $settle s" >&2
  sleep "$settle"
  for w in $(seq "$windows"); do
    r=$(python3 "$tmp/measure.py" 20 "$lab")
    rows+=("{\"assignment\": \"$assignment\", \"window\": $w, \"by_binary\": $r}")
    python3 - "$r" "$old" "$new" "$assignment" "$w" <<'EOF' >&2
import json, sys
r, old, new, a, w = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
total = sum(v["total_pct"] for v in r.values())
each = ", ".join(f"{name} {r[b]['per_daemon_us_per_s']:.0f} us/s ({r[b]['daemons']})"
                 for name, b in (("old", old), ("new", new)) if b in r)
ratio = (f"; new/old {r[new]['per_daemon_us_per_s'] / r[old]['per_daemon_us_per_s']:.3f}"
         if old in r and new in r else "")
print(f"  {a} window {w}: per daemon, {each}{ratio}; all daemons {total:.1f} % of a core")
EOF
  done
  "$wuos" lab down "$lab" >/dev/null 2>&1
done

mkdir -p "$(dirname "$out")"
printf '{"topology": "%s", "lab_args": "%s", "mode": "%s", "old": "%s", "new": "%s", "windows": [%s]}\n' \
  "$topology" "$lab_args" "$mode" "$old" "$new" "$(IFS=,; echo "${rows[*]}")" > "$out"
python3 - "$out" <<'EOF'
import itertools, json, statistics, sys
d = json.load(open(sys.argv[1]))
if d["mode"] == "paired":
    ratios = [w["by_binary"][d["new"]]["per_daemon_us_per_s"] / w["by_binary"][d["old"]]["per_daemon_us_per_s"]
              for w in d["windows"] if d["old"] in w["by_binary"] and d["new"] in w["by_binary"]]
    print(f"new/old per-daemon CPU over {len(ratios)} windows: mean {statistics.mean(ratios):.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f}  ({sys.argv[1]})")
else:
    # One figure per lab-up: its windows' mean of all daemons' CPU, % of one core.
    # Consecutive labs alternate, so each run of one assignment is one lab.
    per = {"old": [], "new": []}
    for a, ws in itertools.groupby(d["windows"], key=lambda w: w["assignment"]):
        per[a.split("=")[1]].append(statistics.mean(
            sum(v["total_pct"] for v in w["by_binary"].values()) for w in ws))
    for k in ("old", "new"):
        print(f"{k}: lab-ups {', '.join(f'{x:.1f}' for x in per[k])} % of a core (all daemons)")
    print(f"new/old, mean of lab-ups: {statistics.mean(per['new']) / statistics.mean(per['old']):.3f}; "
          f"highest new / lowest old: {max(per['new']) / min(per['old']):.3f}  ({sys.argv[1]})")
EOF
