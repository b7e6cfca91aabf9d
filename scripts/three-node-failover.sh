#!/usr/bin/env bash
# Three master-events processes on loopback, one etcd, and a failover to watch:
# the walk-through of docs/cluster.md ("See a failover on one machine"), runnable.
#
#   cargo install --path crates/cli --features etcd   # master-events with etcd discovery
#   bash scripts/three-node-failover.sh
#
# Needs `etcd` (Debian: etcd-server), `curl` and `master-events` (built with the etcd
# feature) on PATH; MASTER_EVENTS=path/to/master-events picks another binary. Uses
# ports 9901-9903 and 2379-2380 on 127.0.0.1 (BASE_PORT / ETCD_PORT move them) and a
# temp dir; everything it started is killed when it ends, however it ends.
set -euo pipefail

me=${MASTER_EVENTS:-master-events}
base=${BASE_PORT:-9900}
etcd_port=${ETCD_PORT:-2379}
work=$(mktemp -d)
pids=()
keep=
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$keep" ]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
# Waits up to 10 s for a command to succeed.
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "gave up waiting for $what" >&2; exit 1
}

say "1. etcd on 127.0.0.1:$etcd_port"
etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-cluster "default=http://127.0.0.1:$((etcd_port + 1))" >"$work/etcd.log" 2>&1 &
pids+=($!)
wait_for "etcd" curl -sf "http://127.0.0.1:$etcd_port/health"

say "2. three nodes, one cluster secret, every node told of every other"
head -c 32 /dev/urandom | base64 >"$work/secret"
peers=()
for i in 0 1 2; do peers+=(--peer "n_$i@127.0.0.1=http://127.0.0.1:$((base + 1 + i))"); done
node_pid=()
for i in 0 1 2; do
  "$me" serve --listen "127.0.0.1:$((base + 1 + i))" --node "n_$i@127.0.0.1" \
    --discovery etcd --etcd "http://127.0.0.1:$etcd_port" --lease-ttl 2 \
    "${peers[@]}" --cluster-secret-file "$work/secret" >"$work/node$i.log" 2>&1 &
  pids+=($!)
  node_pid[i]=$!
done
master_of() { curl -sf "http://127.0.0.1:$1/cluster" | sed -n 's/.*"master":"\([^"]*\)".*/\1/p'; }
has_master() { test -n "$(master_of "$1")"; }
for i in 0 1 2; do wait_for "node $i to know its master" has_master $((base + 1 + i)); done
master=$(master_of $((base + 1)))
echo "master: $master (GET /cluster on any node says so)"

say "3. a reader on a node that is not the master (n_2 unless it is the master)"
reader=2
[ "$master" = "n_2@127.0.0.1" ] && reader=1
"$me" tail "http://127.0.0.1:$((base + 1 + reader))" >"$work/tail.out" 2>"$work/tail.err" &
pids+=($!)

say "4. events noted on every node, before and after the master is killed"
# Exit 0: sequenced; exit 3: accepted and queued by the node until its (new) master
# takes it. Both are acknowledged: the reader must see each exactly once.
acked=0
emit_round() {
  local rc
  for i in 0 1 2; do
    [ "$i" = "$1" ] && continue
    rc=0
    "$me" emit "http://127.0.0.1:$((base + 1 + i))" vbucketMoveDone bucket=default \
      "vbucket=$2" >/dev/null 2>&1 || rc=$?
    if [ "$rc" = 0 ] || [ "$rc" = 3 ]; then acked=$((acked + 1)); fi
  done
}
for v in $(seq 1 10); do emit_round none "$v"; done
m=${master#n_}; m=${m%@*}
echo "kill -9 the master, $master (pid ${node_pid[m]})"
{ kill -9 "${node_pid[m]}"; wait "${node_pid[m]}"; } 2>/dev/null || true
for v in $(seq 11 20); do emit_round "$m" "$v"; done
# The new master notes becameMaster once it has taken over.
new_master_noted() { grep '"type":"becameMaster"' "$work/tail.out" | grep -vq "\"node\":\"$master\""; }
wait_for "the new master's becameMaster" new_master_noted
new_master=$(master_of $((base + 1 + reader)))
for v in $(seq 21 30); do emit_round "$m" "$v"; done
wait_for "the reader to see the last events" grep -q '"vbucket":30' "$work/tail.out"

say "5. what the reader saw"
grep -o '"type":"becameMaster"[^}]*' "$work/tail.out" || true
echo "new master: $new_master"
seen=$(grep -c '"type":"vbucketMoveDone"' "$work/tail.out")
seqs=$(sed -n 's/.*"seq":\([0-9]*\).*/\1/p' "$work/tail.out")
lines=$(wc -l <"$work/tail.out")
echo "acknowledged: $acked events; the reader saw $seen of them, in $lines lines"
echo "seqs $(echo "$seqs" | head -1)..$(echo "$seqs" | tail -1), $(echo "$seqs" | sort -un | wc -l) distinct"
if [ "$seen" = "$acked" ] && [ "$(echo "$seqs" | sort -un | wc -l)" = "$lines" ] \
  && [ "$(echo "$seqs" | tail -1)" = "$lines" ]; then
  echo "every acknowledged event exactly once, seqs 1..$lines without a hole"
else
  echo "MISMATCH"; keep=1; exit 1
fi
echo "reader's notes (gaps and reconnects would be here):"
sed 's/^/  /' "$work/tail.err"
