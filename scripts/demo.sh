#!/usr/bin/env bash
# The main job, with no Discord account: the bot's ears on real speech with real models.
# Speaks a short sample with espeak-ng (or takes your WAV) and runs the listening pipeline:
# one line per detected utterance with its transcript, turn-completion probability and the
# time each stage took.
#
#   scripts/demo.sh                 generated sample
#   scripts/demo.sh my.wav [--json] [--model base] ...   your own recording, extra flags
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
cargo build --quiet --locked -p voicebot-shard

input="${1:-}"
[[ $# -gt 0 ]] && shift
if [[ -z "$input" ]]; then
  demo="$root/.cache/demo"
  mkdir -p "$demo"
  input="$demo/sample.wav"
  if [[ ! -f "$input" ]]; then
    espeak-ng -v en-us -s 160 -w "$demo/a.wav" "Hey Jarvis, what is the weather going to be like in Paris tomorrow?"
    espeak-ng -v en-gb+f3 -s 150 -w "$demo/b.wav" "I was going to ask you about, um"
    espeak-ng -v en-us+m3 -s 170 -w "$demo/c.wav" "the train times to London on Saturday morning."
    # 48 kHz stereo, as Discord delivers it: pauses between the parts, a long one after the first.
    sox -n -r 22050 -c 1 "$demo/gap.wav" trim 0 2.5
    sox -n -r 22050 -c 1 "$demo/short.wav" trim 0 0.9
    sox "$demo/gap.wav" "$demo/a.wav" "$demo/gap.wav" "$demo/b.wav" "$demo/short.wav" "$demo/c.wav" "$demo/gap.wav" \
      -r 48000 -c 2 "$input"
    rm -f "$demo"/{a,b,c,gap,short}.wav
  fi
  echo "sample: $input (48 kHz stereo; three spoken parts, the last two one turn)" >&2
fi
exec "$root/target/debug/voicebot-shard" pipeline --input "$input" "$@"
