#!/usr/bin/env bash
# After the test suite: no secret any test used may appear in anything the product wrote —
# the test output and every log the tests' pods, demos and tools left in their scratch
# directories. Secrets: the simulator's bot token, the test Redis password, every OpenClaw
# gateway token the tests generated, every device private key and device token written.
#   scripts/check-secrets.sh MARKER TEST_OUTPUT   (files newer than MARKER are this run's)
set -euo pipefail
marker="$1"
output="$2"
tmp="${TMPDIR:-/tmp}"

secrets=(sim-bot-token s3cret-redis-pw)
# Gateway tokens (openclaw.json of each gateway the tests started), device keys and tokens.
while IFS= read -r s; do
  [[ -n "$s" ]] && secrets+=("$s")
done < <(find "$tmp" -maxdepth 3 -newer "$marker" \( -name openclaw.json -o -name device.json \) \
           -print0 2>/dev/null | xargs -0 -r python3 -c '
import json, sys
for path in sys.argv[1:]:
    try:
        d = json.load(open(path))
    except Exception:
        continue
    for v in (d.get("gateway", {}).get("auth", {}).get("token"), d.get("privateKey"), d.get("deviceToken")):
        if isinstance(v, str) and len(v) >= 8:
            print(v)
')

# What the product wrote: the test output, and the logs in the tests' scratch directories
# (not the OpenClaw gateway's own files, voicebot-gw-*).
files=("$output")
while IFS= read -r -d '' f; do files+=("$f"); done < <(
  find "$tmp" -maxdepth 3 -newer "$marker" -type f \( -name '*.log' -o -name '*.json' -o -name '*.txt' \) \
    -path "$tmp/voicebot-*" ! -path "$tmp/voicebot-gw-*" ! -name openclaw.json ! -name device.json -print0 2>/dev/null)

leaks=0
for s in "${secrets[@]}"; do
  while IFS= read -r f; do
    echo "check-secrets: a secret (${#s} characters, starting ${s:0:3}…) is in $f" >&2
    leaks=$((leaks + 1))
  done < <(grep -lF -- "$s" "${files[@]}" 2>/dev/null || true)
done
if (( leaks > 0 )); then
  echo "check-secrets: $leaks leak(s)" >&2
  exit 1
fi
echo "check-secrets: ${#secrets[@]} secrets, none in ${#files[@]} files (test output and logs)"
