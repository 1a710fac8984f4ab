#!/usr/bin/env bash
# The main job, with no Discord account: a simulated Discord user talks to the bot.
# voicebot-demo starts the Discord simulator, a real OpenClaw gateway (with a small fake model,
# unless OPENCLAW_GATEWAY_URL / --gateway names yours) and the shard, all on this machine; the
# user joins a voice channel, runs /jarvis join and says the sample; the bot's reply is written
# to a WAV and the latencies are printed.
#
#   scripts/demo.sh                              generated sample ("Jarvis, what is two plus two?")
#   scripts/demo.sh my.wav [--json] [--repeat 20] [--agent sage] [--sensitivity high] ...
#   scripts/demo.sh --voicebot examples/voicebot.yaml --agent sage   the resource's agents, voices, settings
#   scripts/demo.sh --no-warm-up                 the first turn as a cold pod would give it
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t0=$SECONDS
say() { printf '\033[1;34m[demo %dm%02ds]\033[0m %s\n' $(((SECONDS - t0) / 60)) $(((SECONDS - t0) % 60)) "$*" >&2; }
# Only what the demo needs (no Redis, Prometheus or Kubernetes tooling: the tests install those).
scripts/setup.sh --demo
say "building voicebot-demo (the first build takes several minutes on 2 cores)"
cargo build --quiet --locked -p voicebot-demo
say "built"

# The first argument is the WAV to say, unless it is a flag (`scripts/demo.sh --voicebot …`).
input=""
if [[ $# -gt 0 && "$1" != --* ]]; then
  input="$1"
  shift
fi
if [[ -z "$input" ]]; then
  demo="$root/.cache/demo"
  mkdir -p "$demo"
  input="$demo/question.wav"
  if [[ ! -f "$input" ]]; then
    espeak-ng -v en-us -s 160 -w "$demo/q.wav" "Jarvis, what is two plus two?"
    sox -n -r 22050 -c 1 "$demo/gap.wav" trim 0 0.5
    # 48 kHz stereo, as Discord clients capture it.
    sox "$demo/gap.wav" "$demo/q.wav" "$demo/gap.wav" -r 48000 -c 2 "$input"
    rm -f "$demo"/{q,gap}.wav
  fi
  echo "sample: $input" >&2
fi
exec "$root/target/debug/voicebot-demo" --input "$input" --out "$root/.cache/demo/out" "$@"
