#!/usr/bin/env bash
# The project's image for scripts/e2e.sh, assembled as the Dockerfile's runtime stage lays it out
# but without a Docker engine: the release binaries, the shared libraries they and ONNX Runtime
# load (their `ldd` closure, from this Debian — the Dockerfile's base is the same release),
# espeak-ng's data, the CA bundle, the `voicebot` user (10001), ONNX Runtime outside /models;
# written as a docker-archive tarball for `ctr images import`. EXTRA_CA (a PEM file), when
# given, is appended to the image's CA bundle: the e2e run's simulated Discord voice server.
#   image.sh ROOT OUT.tar [EXTRA_CA]
set -euo pipefail
root="$1"
out="$2"
extra_ca="${3:-}"
rel="$root/target/release"
fs="$(mktemp -d)"
trap 'rm -rf "$fs"' EXIT
bins=(voicebot-shard voicebot-operator voicebot-models)
mkdir -p "$fs/usr/local/bin" "$fs/usr/lib/voicebot/onnxruntime" "$fs/usr/share/voicebot" \
  "$fs/etc/ssl/certs" "$fs/models" "$fs/tmp"
chmod 1777 "$fs/tmp"
for b in "${bins[@]}"; do
  [[ -x "$rel/$b" ]] || { echo "image.sh: $rel/$b missing (cargo build --release)" >&2; exit 1; }
  install -m 0755 -s "$rel/$b" "$fs/usr/local/bin/$b"
done
cp -L "$root"/.cache/models/onnxruntime/libonnxruntime.so* "$fs/usr/lib/voicebot/onnxruntime/"
# Every library the binaries and ONNX Runtime load, at its own path, and the loader.
for f in "${bins[@]/#/$fs/usr/local/bin/}" "$fs"/usr/lib/voicebot/onnxruntime/libonnxruntime.so*; do
  ldd "$f" | awk '/=> \// {print $3} /^[ \t]*\/lib/ {print $1}'
done | sort -u | while read -r lib; do
  mkdir -p "$fs$(dirname "$lib")"
  cp -L "$lib" "$fs$lib"
done
cp -a /usr/lib/x86_64-linux-gnu/espeak-ng-data "$fs/usr/lib/x86_64-linux-gnu/"
cp -L /etc/ssl/certs/ca-certificates.crt "$fs/etc/ssl/certs/"
[[ -z $extra_ca ]] || cat "$extra_ca" >>"$fs/etc/ssl/certs/ca-certificates.crt"
cp "$root/models/manifest.tsv" "$fs/usr/share/voicebot/manifest.tsv"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nvoicebot:x:10001:10001::/nonexistent:/usr/sbin/nologin\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n' \
  >"$fs/etc/passwd"
printf 'root:x:0:\nvoicebot:x:10001:\nnogroup:x:65534:\n' >"$fs/etc/group"
python3 "$root/scripts/e2e/mkimage.py" "$fs" "$out" voicebot:0.1.0 \
  --entrypoint '["/usr/local/bin/voicebot-shard"]' --user 10001:10001 \
  --env PATH=/usr/local/bin:/usr/bin:/bin --env VOICEBOT_MODELS_DIR=/models \
  --env ORT_DYLIB_PATH=/usr/lib/voicebot/onnxruntime/libonnxruntime.so >/dev/null
