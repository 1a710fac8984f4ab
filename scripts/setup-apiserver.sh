#!/usr/bin/env bash
# Builds a real kube-apiserver (and installs etcd) for the operator's integration test, offline
# but for the Debian archive: no registry ships a kube-apiserver binary, but Debian's source
# package `kubernetes` (1.20) builds one with Debian's Go. Idempotent; the binaries are cached in
# .cache/k8s/bin. Called by scripts/setup.sh (skip with SETUP_SKIP_APISERVER=1).
#
# K8S_BINARIES="kube-apiserver kubelet kube-proxy kube-scheduler kube-controller-manager" builds
# those instead (scripts/setup-k8s-node.sh does, for the single-node end-to-end run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
k8s_dir="$root/.cache/k8s"
bin="$k8s_dir/bin"
# Elapsed time since setup.sh started (SETUP_T0), or since this script did.
SETUP_T0="${SETUP_T0:-$(date +%s)}"
elapsed() { local s=$(($(date +%s) - SETUP_T0)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
say() { printf '\033[1;34m[setup %s]\033[0m %s\n' "$(elapsed)" "$*" >&2; }
die() { printf '\033[1;31m[setup %s] error:\033[0m %s\n' "$(elapsed)" "$*" >&2; exit 1; }

wanted=(${K8S_BINARIES:-kube-apiserver})
missing=()
for b in "${wanted[@]}"; do [[ -x "$bin/$b" ]] || missing+=("$b"); done
if [[ ${#missing[@]} -eq 0 ]] && command -v etcd >/dev/null; then
  say "${wanted[*]} $("$bin/${wanted[0]}" --version 2>/dev/null | awk '{print $2}') and etcd present"
  exit 0
fi

sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
# Source packages need a deb-src entry: a copy of the deb822 sources with Types: deb-src.
if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  say "adding deb-src entries"
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
      | $sudo tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
  elif [[ -f /etc/apt/sources.list ]]; then
    grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
      | $sudo tee /etc/apt/sources.list.d/debian-src.list >/dev/null
  else
    die "no apt sources found to derive deb-src entries from"
  fi
fi
$sudo apt-get update -qq
say "installing Go, etcd and the reflect2 source"
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  golang-go etcd-server golang-github-modern-go-reflect2-dev dpkg-dev make rsync >/dev/null

src="$k8s_dir/src"
if ! compgen -G "$src/kubernetes-*/" >/dev/null; then
  say "fetching Debian's kubernetes source package"
  rm -rf "$src" && mkdir -p "$src"
  (cd "$src" && apt-get source -qq --download-only kubernetes >/dev/null \
     && dpkg-source -x --no-check ./kubernetes_*.dsc >/dev/null)
fi
tree="$(ls -d "$src"/kubernetes-*/ | head -n1)"
# The vendored reflect2 does not build with Go >= 1.18; Debian's packaged one does.
vendored="$tree/vendor/github.com/modern-go/reflect2"
if [[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 && ! -f "$vendored/.debian" ]]; then
  rm -rf "$vendored"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$vendored"
  touch "$vendored/.debian"
fi
mkdir -p "$bin"
# The pod sandbox's `pause` is C: built static, as upstream's image holds it.
go_missing=()
for b in "${missing[@]}"; do
  if [[ $b == pause ]]; then
    gcc -Os -Wall -Werror -static -DVERSION=v3.4-voicebot -o "$bin/pause.partial" \
      "$tree/build/pause/linux/pause.c" && strip "$bin/pause.partial" \
      && mv "$bin/pause.partial" "$bin/pause" || die "pause did not build"
    say "pause $("$bin/pause" -v 2>&1) built"
  else
    go_missing+=("$b")
  fi
done
missing=(${go_missing[@]+"${go_missing[@]}"})
[[ ${#missing[@]} -gt 0 ]] && say "building ${missing[*]} (a few minutes each on 2 cores)" \
  && (cd "$tree" && GOPATH="$tree/.go" CGO_ENABLED=0 GOPROXY=off \
        make WHAT="${missing[*]/#/cmd/}" >/dev/null)
for b in ${missing[@]+"${missing[@]}"}; do
  built="$(find "$tree/_output" -type f -name "$b" | head -n1)"
  [[ -x "$built" ]] || die "$b did not build"
  cp "$built" "$bin/$b.partial" && mv "$bin/$b.partial" "$bin/$b"
  say "$b $("$bin/$b" --version | awk '{print $2}') built"
done
rm -rf "$src"
