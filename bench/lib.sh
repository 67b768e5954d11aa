# Helpers shared by the bench scripts (sourced; they run from the repository's root).

# The share of this machine's CPU time the hypervisor took (steal) between two /proc/stat `cpu` lines,
# in whole percent: runs with much of it are not comparable with the others (a busy host slows every
# system, unevenly).
steal_pct() { printf '%s\n%s\n' "$1" "$2" | awk '{ t = 0; for (f = 2; f <= 9; f++) t += $f; tot[NR] = t; st[NR] = $9 } END { d = tot[2] - tot[1]; printf "%.0f", (d > 0 ? 100 * (st[2] - st[1]) / d : 0) }'; }

# Sets BIN to the build to measure — .build/release when it holds every program named after `$1`,
# else .build/debug, unless BIN is set — and stops script `$1` when that build lacks one of them.
pick_bin() {
  local script=$1 p; shift
  if [ -z "${BIN:-}" ]; then
    BIN=.build/release
    for p in "$@"; do [ -x ".build/release/$p" ] || BIN=.build/debug; done
  fi
  for p in "$@"; do
    [ -x "$BIN/$p" ] || { echo "$script: no $BIN/$p; run swift build or make release (or make demo) first" >&2; exit 2; }
  done
}

# Starts `pgchorus demo --backends $3` of build $1 on port $2 in directory $4 (its log $4.log) in the
# background, adds its pid to DEMOS, and waits until it is ready (at most 120 s; else prints the log's
# tail and stops the script).
start_demo() {
  local bin=$1 port=$2 n=$3 dir=$4
  "$bin/pgchorus" demo --backends "$n" --port "$port" --dir "$dir" >"$dir.log" 2>&1 &
  DEMOS+=($!)
  for _ in $(seq 1 120); do grep -q "demo ready" "$dir.log" && break; sleep 1; done
  grep -q "demo ready" "$dir.log" || { tail -20 "$dir.log"; exit 1; }
}

# Prints the configuration of one more pgchorusd in front of the backends of the demo in directory $1
# (whose own pgchorusd listens on port $2): listening on port $3, with node id, admin socket and state
# directory named after $4.
node_config() {
  local dir=$1 port=$2 new=$3 name=$4
  sed -e "s/^id = \"node1\"/id = \"$name\"/" -e "s/^listen_port = $port/listen_port = $new/" \
      -e "s/^socket = \"admin.sock\"/socket = \"$name.sock\"/" -e "s/^state_directory = \"state\"/state_directory = \"$name-state\"/" \
      "$dir/pgchorus.toml"
}

# Starts a second pgchorusd of build $1 in front of the backends of the demo in directory $2 (whose own
# pgchorusd listens on port $3), on port $4, with `replication.commit_epochs = false` (the order of
# commits and statements off; its own node id, admin socket and state directory; log $2/order-off.log),
# adds its pid to PIDS and waits until it listens (at most 30 s; else prints the log's tail and stops
# the script).
start_order_off_node() {
  local bin=$1 dir=$2 port=$3 off=$4
  node_config "$dir" "$port" "$off" order-off >"$dir/order-off.toml"
  printf '\n[replication]\ncommit_epochs = false\n' >>"$dir/order-off.toml"
  "$bin/pgchorusd" --config "$dir/order-off.toml" >"$dir/order-off.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 60); do grep -q "listening" "$dir/order-off.log" && break; sleep 0.5; done
  grep -q "listening" "$dir/order-off.log" || { tail -20 "$dir/order-off.log"; exit 1; }
}

# Starts pgbouncer (session mode, any user trusted) as postgres in directory $1, listening on
# 127.0.0.1:$2 in front of the PostgreSQL server on 127.0.0.1:$3; waits for its pid file (at most
# 10 s; else prints its log and stops the script) and sets PGBOUNCER_PID.
start_pgbouncer() {
  local dir=$1 port=$2 server=$3
  mkdir -p "$dir"; chown postgres "$dir"
  cat > "$dir/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$server dbname=postgres user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = any
pool_mode = session
max_client_conn = 400
default_pool_size = 100
logfile = $dir/log
pidfile = $dir/pid
INI
  chown postgres "$dir/pgbouncer.ini"
  runuser -u postgres -- pgbouncer "$dir/pgbouncer.ini" >/dev/null 2>&1 &
  for _ in $(seq 1 20); do [ -s "$dir/pid" ] && break; sleep 0.5; done
  PGBOUNCER_PID=$(cat "$dir/pid" 2>/dev/null || true)
  [ -n "$PGBOUNCER_PID" ] || { echo "pgbouncer did not start: $(cat "$dir/log" 2>/dev/null)" >&2; exit 1; }
}
