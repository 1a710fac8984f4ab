#!/usr/bin/env bash
# Builds a real kube-apiserver (and installs etcd) for the operator's integration test, offline
# but for the Debian archive: no registry ships a kube-apiserver binary, but Debian's source
# package `kubernetes` (1.20) builds one with Debian's Go. Idempotent; the binary is cached in
# .cache/k8s/bin. Called by scripts/setup.sh (skip with SETUP_SKIP_APISERVER=1).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
k8s_dir="$root/.cache/k8s"
bin="$k8s_dir/bin"
# Elapsed time since setup.sh started (SETUP_T0), or since this script did.
SETUP_T0="${SETUP_T0:-$(date +%s)}"
elapsed() { local s=$(($(date +%s) - SETUP_T0)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
say() { printf '\033[1;34m[setup %s]\033[0m %s\n' "$(elapsed)" "$*" >&2; }
die() { printf '\033[1;31m[setup %s] error:\033[0m %s\n' "$(elapsed)" "$*" >&2; exit 1; }

if [[ -x "$bin/kube-apiserver" ]] && command -v etcd >/dev/null; then
  say "kube-apiserver $("$bin/kube-apiserver" --version 2>/dev/null | awk '{print $2}') and etcd present"
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
say "building kube-apiserver (a few minutes on 2 cores)"
(cd "$tree" && GOPATH="$tree/.go" CGO_ENABLED=0 GOPROXY=off \
   make WHAT=cmd/kube-apiserver >/dev/null)
built="$(find "$tree/_output" -type f -name kube-apiserver | head -n1)"
[[ -x "$built" ]] || die "kube-apiserver did not build"
mkdir -p "$bin"
cp "$built" "$bin/kube-apiserver.partial" && mv "$bin/kube-apiserver.partial" "$bin/kube-apiserver"
rm -rf "$src"
say "kube-apiserver $("$bin/kube-apiserver" --version | awk '{print $2}') built"
