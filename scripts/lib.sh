# Shared by the check scripts (sourced, after `root` is set).

# A workspace binary: built here, unless scripts/test.sh has just built every one with the test
# suite (VOICEBOT_PREBUILT=1) — building one package alone resolves other features and would
# compile half the dependency tree again.
workspace_bin() {
  [[ "${VOICEBOT_PREBUILT:-0}" == 1 ]] || cargo build -q --locked -p "$1" >&2
  echo "$root/target/debug/$1"
}
