#!/usr/bin/env bash
# Instructions the sidecar executes per proxied request, counted by
# callgrind: a deterministic figure where this machine's wall-clock ones
# move by a quarter between runs. It runs `proxy_load` at 200 requests/s
# with the one-hop proxy (workload shop/web-v1) under callgrind, dumps its
# counters every 2 s beside its request count (/metrics), and prints the
# median instructions per request of the one-hop (plaintext) phase and of
# the two two-hop phases (this proxy is the mTLS client there: HTTP/1.1
# between the proxies, the default, then HTTP/2). User space only: the kernel's share
# is not counted. With `--server`, the proxy of the two hops' far side
# (workload shop/ratings-v1, the mTLS server) instead, by its inbound
# requests, in the two two-hop phases.
#
# Usage: benches/callgrind_proxy.sh [--server] [meshc-proxy binary]
# Needs valgrind and curl, and the benchmark built:
#   cargo bench --bench proxy_load --no-run
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--server" ]; then
    shift
    workload=shop/ratings-v1 direction=inbound
    phases="two hops, HTTP/1.1 (mTLS server)|two hops, HTTP/2 (mTLS server)"
else
    workload=shop/web-v1 direction=outbound
    phases="one hop, plaintext|two hops, HTTP/1.1 (mTLS client)|two hops, HTTP/2 (mTLS client)"
fi
# 2,400 requests a phase (200 requests/s for 10 s and 2 s of warm-up).
last=$(( $(echo "$phases" | tr '|' '\n' | wc -l) * 2400 ))
bin=$(realpath "${1:-target/release/meshc-proxy}")
bench=$(ls -t target/release/deps/proxy_load-* | grep -v '\.d$' | head -1)
work=$(mktemp -d)
cleanup() {
    # The benchmark and the processes it started share its process group.
    [ -n "${bench_pid:-}" ] && kill -- "-$bench_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/proxy.sh" <<EOF
#!/bin/sh
case "\$*" in
  *$workload*) exec valgrind --tool=callgrind --callgrind-out-file=$work/out.%p "$bin" "\$@" ;;
esac
exec "$bin" "\$@"
EOF
chmod +x "$work/proxy.sh"

MESHC_BENCH_PROXY="$work/proxy.sh" MESHC_BENCH_RPS=200 MESHC_BENCH_SECONDS=10 \
    MESHC_BENCH_ROUNDS=1 setsid "$bench" --bench > "$work/bench.log" 2>&1 &
bench_pid=$!

# Dump every 2 s until the phases are over.
n=0
while kill -0 "$bench_pid" 2>/dev/null; do
    pid=$(pgrep -f "valgrind.*callgrind.*$work.*$workload" | head -1 || true)
    if [ -n "$pid" ]; then
        admin=$(tr '\0' ' ' < "/proc/$pid/cmdline" | sed -n 's/.*--admin-addr \([^ ]*\).*/\1/p')
        n=$(curl -s --max-time 2 "http://$admin/metrics" |
            awk -v d="$direction" '$0 ~ "^meshc_proxy_requests_total\\{direction=\"" d "\"" {s += $NF} END {print s + 0}')
        callgrind_control -d "$pid" > /dev/null 2>&1 || true
        echo "$n" >> "$work/counts"
        [ "$n" -ge "$last" ] && break
    fi
    sleep 2
done

python3 - "$work" "$phases" <<'EOF'
import glob, os, re, statistics, sys
work = sys.argv[1]
counts = [int(l) for l in open(os.path.join(work, "counts"))]
dumps = {}
for f in glob.glob(os.path.join(work, "out.*.*")):
    i = int(f.rsplit(".", 1)[1])
    for line in open(f):
        if line.startswith(("summary:", "totals:")):
            dumps[i] = int(line.split()[1])
            break
phases = {name: [] for name in sys.argv[2].split("|")}
for i in range(1, len(counts)):
    done = counts[i] - counts[i - 1]
    ir = dumps.get(i + 1)  # dump i+1 holds what ran up to reading count i
    if ir is None or done < 300:  # partial intervals: warm-up, phase edges
        continue
    phase = list(phases)[min((counts[i] - 1) // 2400, len(phases) - 1)]
    phases[phase].append(ir / done)
for name, per in phases.items():
    if per:
        print(f"{name:<34} {statistics.median(per):>9,.0f} instructions/request "
              f"(median of {len(per)} intervals, {min(per):,.0f}..{max(per):,.0f})")
    else:
        print(f"{name:<34} no full interval measured")
EOF
