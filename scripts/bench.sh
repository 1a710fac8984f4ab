#!/usr/bin/env bash
# Benchmarks the listening pipeline against its Python peers, side by side on the same clips
# with the same thread count, and prints the ratios. Not part of the test command.
#
#   scripts/bench.sh            (BENCH_THREADS=2 by default)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh

venv="$root/.cache/venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import faster_whisper, pipecat, onnxruntime" 2>/dev/null; then
  echo "[bench] creating the Python peer environment in $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy onnxruntime==1.31.1 faster-whisper==1.2.1 pipecat-ai==1.14.0 soxr
fi

clips="$root/.cache/bench/clips"
mkdir -p "$clips"
if [[ ! -f "$clips/clips.tsv" ]]; then
  echo "[bench] generating clips with espeak-ng" >&2
  : > "$clips/clips.tsv.partial"
  i=0
  while IFS='|' read -r voice speed text; do
    i=$((i + 1))
    espeak-ng -v "$voice" -s "$speed" -w "$clips/raw.wav" "$text"
    sox "$clips/raw.wav" -r 16000 -b 16 -c 1 "$clips/clip$i.wav" pad 0.3 0.3
    printf 'clip%d.wav\t%s\n' "$i" "$text" >> "$clips/clips.tsv.partial"
  done <<'CLIPS'
en-us|160|Hey Jarvis, what is the capital of France?
en-us+f3|170|Sage, what's the weather going to be like this weekend?
en-gb|150|Can you add milk, eggs and bread to my shopping list?
en-us+m3|180|Jarvis, how long does it take to boil an egg?
en-us|140|Tell me a short story about a dragon who learns to cook.
en-gb-x-rp|160|What was the final score of the football match last night?
en-us+f2|190|Set an alarm for seven thirty tomorrow morning.
en-us|150|I think we should leave before the traffic gets worse.
en-gb|170|Remind me to water the plants when I get home from work.
en-us+m1|160|Which planet in the solar system has the most moons?
en-us|200|Okay, stop the music.
en-us+f4|145|Could you explain how a rainbow forms after the rain?
CLIPS
  rm -f "$clips/raw.wav"
  mv "$clips/clips.tsv.partial" "$clips/clips.tsv"
fi

BENCH_THREADS="${BENCH_THREADS:-2}" cargo bench -p voicebot-shard --bench pipeline -- \
  --clips "$clips" --python "$venv/bin/python" --models "$root/.cache/models"
