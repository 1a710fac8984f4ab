#!/usr/bin/env bash
# What can be checked of the Dockerfile without a Docker engine (none on these machines):
#  - every build-context path it COPYs exists and is not excluded by .dockerignore;
#  - the binaries it copies are the workspace's binaries;
#  - the model paths it uses match models/manifest.tsv, and the converter flags it passes exist;
#  - the runtime user is not root.
# Part of scripts/test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
fail() { echo "check-dockerfile: $*" >&2; exit 1; }

# COPY <src>... <dest> without --from: sources must exist in the context.
while read -r src; do
  [[ "$src" == "." ]] && continue
  [[ -e "$src" ]] || fail "COPY source '$src' does not exist"
  if grep -qxF "$src" .dockerignore 2>/dev/null; then fail "COPY source '$src' is in .dockerignore"; fi
done < <(grep -E '^COPY ' Dockerfile | grep -v -- '--from' | awk '{for (i = 2; i < NF; i++) print $i}')

# The binaries the image carries are built by the workspace.
bins="$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null \
  | python3 -c 'import json,sys; print(" ".join(t["name"] for p in json.load(sys.stdin)["packages"] for t in p["targets"] if "bin" in t["kind"]))')"
for b in voicebot-shard voicebot-operator voicebot-models; do
  grep -q "target/release/$b" Dockerfile || fail "the image does not build $b"
  [[ " $bins " == *" $b "* ]] || fail "$b is not a binary of the workspace"
done

# ONNX Runtime: the version linked in the image is the pinned one.
ort_version="$(awk -F'\t' '$1 == "onnxruntime" {print $2}' models/manifest.tsv)"
grep -q "libonnxruntime.so.$ort_version" Dockerfile || fail "Dockerfile links an ONNX Runtime other than $ort_version"
# The Whisper conversion uses flags the converter has, on files the manifest provides.
models_bin="$(workspace_bin voicebot-models)"
help="$("$models_bin" convert-whisper --help)"
for flag in --model --vocabulary --out; do
  [[ "$help" == *"$flag"* ]] || fail "convert-whisper has no $flag"
done
for f in $(grep -oE '/models/ct2/[^ ]+' Dockerfile | sed 's#^/models/##' | sort -u); do
  awk -F'\t' '{print $5}' models/manifest.tsv | grep -qxF "$f" || fail "$f is not in models/manifest.tsv"
done

# The provision command the image build and the pods' init container run has the flags used.
help="$("$models_bin" provision --help)"
for flag in --manifest --dest --whisper --skip --only --index-url; do
  [[ "$help" == *"$flag"* ]] || fail "provision has no $flag"
done
# The manifest and ONNX Runtime are where the operator's pods expect them, outside /models.
manifest="$(sed -n 's/^pub const IMAGE_MANIFEST: &str = "\(.*\)";/\1/p' operator/src/render.rs)"
[[ -n "$manifest" ]] || fail "operator/src/render.rs has no IMAGE_MANIFEST"
grep -q "^COPY models/manifest.tsv $manifest\$" Dockerfile || fail "the image has no manifest at $manifest"
grep -q 'ORT_DYLIB_PATH=/usr/lib/voicebot/' Dockerfile || fail "ONNX Runtime must live outside /models"
# The image tag the build comments give is the operator's default image.
version="$(cargo metadata --no-deps --format-version 1 --offline | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "voicebot-crds"))')"
grep -q "docker build -t voicebot:$version \." Dockerfile || fail "the Dockerfile does not build voicebot:$version (the default spec.image)"

# Non-root at run time, with the uid the operator's pod security context uses.
grep -q '^USER 10001:10001' Dockerfile || fail "the runtime does not run as uid 10001"
grep -q 'run_as_user: Some(10001)' operator/src/render.rs || fail "operator pods do not run as 10001"
echo "check-dockerfile: context paths, binaries, models, ONNX Runtime $ort_version and user consistent"
