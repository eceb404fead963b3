# Sourced by the benchmarks that time a memaudit-server on the committed
# checkpoints (bench/omp_wait_policy.sh, bench/host_allocator.sh): checks the
# built binaries, makes a scratch folder removed on exit (with the server),
# and starts or stops one server at a time.
#   BUILD (default build): the build tree.
BUILD=${BUILD:-build}
SERVER=$BUILD/server/memaudit-server CLI=$BUILD/client/memaudit
[[ -x $SERVER && -x $CLI ]] || { echo "$SERVER or $CLI is not built: scripts/build.sh" >&2; exit 1; }
WORK=$(mktemp -d)
server_pid=""
cleanup() {
  local status=$?
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  if ((status != 0)) && [[ -s $WORK/server.log ]]; then
    echo "--- the server's log:" >&2
    tail -n 30 "$WORK/server.log" >&2
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_server ENV_ARGS...: starts the server under `env ENV_ARGS...` on free
# ports, waits until it serves, and sets server_pid and client (the CLI
# command line that reaches it).
start_server() {
  rm -f "$WORK/ports"
  env "$@" "$SERVER" --model_repository checkpoints --listen 127.0.0.1:0 \
    --metrics_listen 127.0.0.1:0 --port_file "$WORK/ports" >"$WORK/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do
    [[ -s $WORK/ports ]] && break
    kill -0 "$server_pid" 2>/dev/null || break  # it exited
    sleep 0.1
  done
  [[ -s $WORK/ports ]] || { cat "$WORK/server.log" >&2; exit 1; }
  client=("$CLI" --server "127.0.0.1:$(cut -d' ' -f1 "$WORK/ports")")
  "${client[@]}" health --wait 120 >/dev/null
}

stop_server() {
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
