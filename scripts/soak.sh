#!/usr/bin/env bash
# The 10-minute soak (not part of the test command): voicebot-demo's load mode, 2 guilds × 2
# users talking over each other for 10 minutes against the real gateway, models and simulator.
# Prints one summary object; memory by minute is in rss_mb.by_minute.
#   scripts/soak.sh [--guilds N] [--speakers M] [--minutes X]   (later flags win)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
cargo build --quiet --locked -p voicebot-demo
exec target/debug/voicebot-demo --guilds 2 --speakers 2 --minutes 10 --json \
  --out "$root/.cache/demo/soak" "$@"
