# scripts/emulator-lib.sh, sourced by scripts/demo, scripts/emulator and
# examples/nginx/with-emulator from the repository root:
# start_emulator RUN CONFIG [server.mjs options...] starts the bundled Okta emulator in the
# background (its node modules installed first when missing), its log in RUN/emulator.log, waits
# until it is ready and sets emu_pid and url. The caller stops it on its own exit paths.
start_emulator() {
  _run=$1 _config=$2
  shift 2
  [ -d test/emulator/node_modules ] || (cd test/emulator && npm ci --no-audit --no-fund --silent)
  node test/emulator/server.mjs --config "$_config" --ready-file "$_run/ready" "$@" >"$_run/emulator.log" 2>&1 &
  emu_pid=$!
  _i=0
  while [ ! -s "$_run/ready" ]; do
    _i=$((_i + 1))
    [ $_i -le 100 ] || { cat "$_run/emulator.log" >&2; echo "the emulator did not start" >&2; exit 1; }
    sleep 0.1
  done
  url=$(sed -E 's/.*"url":"([^"]+)".*/\1/' "$_run/ready")
}
