#!/usr/bin/env bash
# What scripts/e2e.sh needs beyond scripts/setup.sh: a single-node Kubernetes 1.20 built from
# Debian's `kubernetes` source package (kubelet, kube-proxy, kube-scheduler,
# kube-controller-manager beside the apiserver, and the sandbox's `pause`), and the container
# runtime from Debian's archive (containerd 1.6, runc, the CNI plugins, iptables, conntrack)
# and dnsmasq (the cluster DNS: service names only, nothing forwarded out).
# Idempotent; the binaries are cached in .cache/k8s/bin. Nothing is started: the packages'
# services are systemd units, and this machine runs no systemd.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v conntrack >/dev/null || need+=(conntrack)
# The cluster's DNS (service names), answered from a hosts directory e2e.sh keeps current.
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
if [[ ${#need[@]} -gt 0 ]]; then
  printf '\033[1;34m[setup-k8s-node]\033[0m installing %s\n' "${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
K8S_BINARIES="kube-apiserver kubelet kube-proxy kube-scheduler kube-controller-manager pause" \
  exec "$root/scripts/setup-apiserver.sh"
