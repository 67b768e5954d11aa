#!/usr/bin/env bash
# VIP failover times on real network namespaces: three pgchorusd nodes and an observer joined by a
# bridge (198.18.0.0/24 only). For each run the owner is killed (kill -9, then SIGTERM) and the time
# from the signal to the first gratuitous ARP for the VIP from another node, captured by tcpdump in
# the observer namespace, is measured; then the owner is frozen (SIGSTOP) a few times, and its peer
# datagrams are dropped at random (10 %, then 30 %, nftables), while the holders are sampled every
# ~10 ms (two at once; owner changes). Prints the figures and writes bench/results/vip-failover.txt.
#
#   bench/vip-failover.sh [runs=10]        (as root; builds nothing: run `swift build` first)
# BIN (.build/debug) the binaries, VIP_OUT (bench/results/vip-failover.txt) where the figures go.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
BIN=${BIN:-.build/debug}
[ -x "$BIN/pgchorusd" ] || { echo "no $BIN/pgchorusd: run swift build first" >&2; exit 2; }
command -v tcpdump >/dev/null || { echo "needs tcpdump" >&2; exit 2; }
TAG=$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')
WORK=$(mktemp -d /tmp/pgchorus-vipbench-XXXXXX)
BR=pgcb-br-$TAG
declare -A PID NS MAC
cleanup() {
  for i in 1 2 3; do [ -n "${PID[$i]:-}" ] && kill -9 "${PID[$i]}" 2>/dev/null || true; done
  [ -n "${CAP:-}" ] && kill "$CAP" 2>/dev/null || true
  for n in node1 node2 node3 observer; do ip netns del "pgcb-$n-$TAG" 2>/dev/null || true; done
  ip netns del "$BR" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
ip netns add "$BR"; ip -n "$BR" link add br0 type bridge; ip -n "$BR" link set br0 up
k=0
for n in node1 node2 node3 observer; do
  k=$((k+1)); ns=pgcb-$n-$TAG; NS[$n]=$ns
  ip netns add "$ns"
  ip link add "pbi$k$TAG" type veth peer name "pbo$k$TAG"
  ip link set "pbi$k$TAG" netns "$ns"; ip link set "pbo$k$TAG" netns "$BR"
  ip -n "$ns" link set "pbi$k$TAG" name eth0; ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up
  ip -n "$BR" link set "pbo$k$TAG" master br0; ip -n "$BR" link set "pbo$k$TAG" up
done
ip -n "${NS[observer]}" addr add 198.18.0.2/24 dev eth0
head -c 32 /dev/urandom | base64 > "$WORK/cluster.key"
for i in 1 2 3; do
  ip -n "${NS[node$i]}" addr add "198.18.0.1$i/24" dev eth0
  MAC[$i]=$(ip -n "${NS[node$i]}" -j link show eth0 | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
  mkdir -p "$WORK/node$i"
  cat > "$WORK/node$i/pgchorus.toml" <<TOML
[node]
id = "node$i"
state_directory = "state"
[proxy]
listen_address = "198.18.0.1$i"
listen_port = 6432
[admin]
socket = "admin.sock"
[cluster]
key_file = "../cluster.key"
port = 7433
[[cluster.nodes]]
id = "node1"
address = "198.18.0.11"
[[cluster.nodes]]
id = "node2"
address = "198.18.0.12"
[[cluster.nodes]]
id = "node3"
address = "198.18.0.13"
[health_check]
enabled = false
[vip]
mode = "address"
interface = "eth0"
address = "198.18.0.100/24"
[[backends]]
id = "db1"
host = "127.0.0.1"
port = 9
TOML
done
start() { ip netns exec "${NS[node$1]}" "$BIN/pgchorusd" --config "$WORK/node$1/pgchorus.toml" --log-level "${LOG_LEVEL:-warning}" >>"$WORK/node$1.log" 2>&1 & PID[$1]=$!; }
# (grep without -q: under pipefail, ip killed by SIGPIPE after an early grep -q exit reads as "absent")
owner() { for i in 1 2 3; do ip -n "${NS[node$i]}" -o addr show dev eth0 | grep '198.18.0.100/' >/dev/null && kill -0 "${PID[$i]}" 2>/dev/null && echo "$i"; done; }
wait_owner_except() { # prints the single owner that is not $1, waiting up to 20 s
  for _ in $(seq 1 400); do o=$(owner | grep -v "^$1\$" || true); [ "$(echo "$o" | grep -c .)" = 1 ] && { echo "$o"; return; }; sleep 0.05; done; echo none
}
for i in 1 2 3; do start "$i"; done
measure() { # $1 = signal; prints the seconds from the signal to the first GARP from another node
  local old new t0 first
  old=$(wait_owner_except 0); sleep 1.5
  ip netns exec "${NS[observer]}" tcpdump -i eth0 --immediate-mode -U -n -w "$WORK/cap.pcap" arp 2>/dev/null & CAP=$!
  sleep 0.5
  t0=$(date +%s.%N)
  kill "-$1" "${PID[$old]}"
  new=$(wait_owner_except "$old")
  if [ "$1" = STOP ]; then sleep 1; kill -CONT "${PID[$old]}"; fi
  sleep ${SETTLE:-1.5}
  kill "$CAP"; wait "$CAP" 2>/dev/null || true; CAP=
  [ "$1" = STOP ] || wait "${PID[$old]}" 2>/dev/null || true
  first=$(tcpdump -tt -n -e -r "$WORK/cap.pcap" 2>/dev/null | grep "^[0-9.]* ${MAC[$new]} .*who-has 198.18.0.100 tell 198.18.0.100" \
          | awk -v t0="$t0" '$1 >= t0 { print $1; exit }')
  [ -n "${DEBUG:-}" ] && { echo "old=$old new=$new t0=$t0 first=$first macs=${MAC[1]} ${MAC[2]} ${MAC[3]}" >&2; tcpdump -tt -n -e -r "$WORK/cap.pcap" 2>/dev/null | head -5 >&2; tail -3 "$WORK/node$new.log" >&2; }
  [ "$1" = STOP ] || { start "$old"; sleep 1.5; }
  [ -n "$first" ] && [ "$new" != none ] && awk -v a="$first" -v b="$t0" 'BEGIN { printf "%.3f\n", a - b }'
}
stats() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) { print "no samples"; exit } printf "n=%d min=%.3f s median=%.3f s max=%.3f s\n", NR, v[1], (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[NR] }'; }
# Samples every running node's interface every ~10 ms for $1 seconds: prints "<samples> <with two
# holders> <owner changes>" (a change: the set of holders differs from the previous sample).
sample_holders() {
  local end prev cur n=0 two=0 changes=0
  end=$(awk -v s="$1" 'BEGIN { srand(); print srand() + s }')
  prev=$(owner | tr '\n' ' ')
  while [ "$(date +%s)" -lt "${end%.*}" ] && [ $n -lt 100000 ]; do
    cur=$(owner | tr '\n' ' ')
    n=$((n+1))
    [ "$(echo "$cur" | wc -w)" -gt 1 ] && two=$((two+1))
    [ "$cur" != "$prev" ] && changes=$((changes+1))
    prev=$cur
    sleep 0.01
  done
  echo "$n $two $changes"
}
freeze_overlap() { # SIGSTOP the owner for 3 s while sampling: prints the samples with two holders
  local old out
  old=$(wait_owner_except 0); sleep 1
  kill -STOP "${PID[$old]}"
  out=$(sample_holders 3)
  kill -CONT "${PID[$old]}"
  sleep 2
  echo "$out" | awk '{ print $2 }'
}
lossy() { # $1 = percent of the owner's peer datagrams dropped (both ways) for $2 s
  local old out
  old=$(wait_owner_except 0)
  ip netns exec "${NS[node$old]}" nft -f - <<NFT
table inet pgcb_loss {
  chain input { type filter hook input priority 0; policy accept; udp dport 7433 numgen random mod 100 < $1 drop; }
  chain output { type filter hook output priority 0; policy accept; udp dport 7433 numgen random mod 100 < $1 drop; }
}
NFT
  out=$(sample_holders "$2")
  ip netns exec "${NS[node$old]}" nft delete table inet pgcb_loss
  sleep 3
  echo "$out"
}
: > "$WORK/kill9"; : > "$WORK/term"; : > "$WORK/stop"; : > "$WORK/overlap"
for r in $(seq 1 "$RUNS"); do
  measure KILL >> "$WORK/kill9" || true
  measure TERM >> "$WORK/term" || true
  echo "run $r: kill -9 $(tail -1 "$WORK/kill9") s, SIGTERM $(tail -1 "$WORK/term") s" >&2
done
for r in $(seq 1 "${FREEZE_RUNS:-3}"); do
  measure STOP >> "$WORK/stop" || true
  freeze_overlap >> "$WORK/overlap" || true
  echo "freeze run $r: new owner's GARP $(tail -1 "$WORK/stop") s, samples with two holders: $(tail -1 "$WORK/overlap")" >&2
done
LOSS_SECS=${LOSS_SECS:-30}
loss10=$(lossy 10 "$LOSS_SECS"); echo "10 % loss: samples, with two holders, owner changes: $loss10" >&2
loss30=$(lossy 30 "$LOSS_SECS"); echo "30 % loss: samples, with two holders, owner changes: $loss30" >&2
{
  echo "# VIP failover, $(date -u +%FT%TZ), $RUNS runs, $(nproc) cores, binaries $BIN"
  echo "# signal to the new owner's first gratuitous ARP seen by an observer namespace"
  echo "kill -9 (crash):     $(stats < "$WORK/kill9")"
  echo "SIGTERM (handover):  $(stats < "$WORK/term")"
  echo "SIGSTOP (frozen):    $(stats < "$WORK/stop")"
  echo "# holders sampled every ~10 ms from the nodes' interfaces"
  echo "frozen owner (3 s), samples with two holders per run: $(tr '\n' ' ' < "$WORK/overlap")"
  set -- $loss10; echo "10 % of the owner's peer datagrams lost for $LOSS_SECS s: $1 samples, $2 with two holders, $3 owner changes"
  set -- $loss30; echo "30 % of the owner's peer datagrams lost for $LOSS_SECS s: $1 samples, $2 with two holders, $3 owner changes"
} | tee "${VIP_OUT:-bench/results/vip-failover.txt}"
