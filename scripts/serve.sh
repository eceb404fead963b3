# Sourced by the experiment scripts: start_server REPOSITORY DIR starts
# memaudit-server on loopback (ephemeral ports, written to DIR/ports; its log
# in DIR/server.log), waits until it answers health checks, stops it when
# the calling script exits, and sets SERVER (its pid), PORT (gRPC) and CLI
# (the memaudit command line for it, without a deadline).
start_server() {
  local repository=$1 dir=$2
  mkdir -p "$dir"
  rm -f "$dir/ports"
  build/server/memaudit-server --model_repository "$repository" --listen 127.0.0.1:0 \
    --metrics_listen 127.0.0.1:0 --port_file "$dir/ports" 2>"$dir/server.log" &
  SERVER=$!
  trap 'kill -TERM $SERVER; wait $SERVER || true' EXIT
  for _ in $(seq 1 200); do [[ -s "$dir/ports" ]] && break; sleep 0.1; done
  read -r PORT _ < "$dir/ports"
  CLI=(build/client/memaudit --server "127.0.0.1:$PORT" --timeout 0)
  "${CLI[@]}" health --wait 120 >/dev/null ||
    { echo "memaudit-server is not serving; its log: $dir/server.log" >&2; exit 1; }
}
