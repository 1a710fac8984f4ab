#!/usr/bin/env bash
# A real single-node Kubernetes 1.20 on this machine, inside one network namespace this script
# makes and deletes (issue 21). Everything — etcd, the control plane, containerd, the kubelet,
# kube-proxy, the pods' bridge (10.88.0.0/16), services (10.96.0.0/16) — lives in that
# namespace: its only interfaces are loopback, a veth pair holding the node address (10.77.0.1)
# and the bridge,
# with no route, NAT or DNS to the machine's real interfaces. All processes share one PID and
# mount namespace (nsenter + unshare, not `ip netns exec`, which remounts /sys without the
# cgroup tree): killing its first process ends them all and unmounts what they mounted.
#
# This step: the cluster comes up, the node turns Ready and a pod runs from a locally built
# image (no registry). Next: the project's images, `helm install`, a VoiceBot answered.
#
#   sudo scripts/e2e.sh            (root: namespaces, mounts, cgroups)
# Research and the reasons for each flag: docs/e2e-kubernetes-plan.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
t0=$(date +%s)
say() { printf '\033[1;34m[e2e %3ss]\033[0m %s\n' "$(($(date +%s) - t0))" "$*" >&2; }
die() { printf '\033[1;31m[e2e] error:\033[0m %s\n' "$*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root: it makes network, PID and mount namespaces and cgroups"

"$root/scripts/setup-k8s-node.sh"
state="$root/.cache/e2e"
rm -rf "$state" && mkdir -p "$state/images"
say "release build of the binaries the image holds"
cargo build --release --locked -p voicebot-shard -p voicebot-operator -p voicebot-models
"$root/scripts/e2e/image.sh" "$root" "$state/images/voicebot.tar"
say "image voicebot:0.1.0: $(du -m "$state/images/voicebot.tar" | cut -f1) MB"
ns="voicebot-e2e-$$"

# The kubelet sets these machine-wide (they are not per network namespace): put them back.
tunables=(vm.overcommit_memory kernel.panic kernel.panic_on_oops vm.panic_on_oom
          kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
saved=()
for t in "${tunables[@]}"; do saved+=("$t=$(sysctl -n "$t")"); done
# Mount points the kubelet and containerd insist on (bind-mounted from $state inside the mount
# namespace): the ones this run creates on the host are removed again.
made=()
for d in /var/lib/kubelet /var/log/pods /var/log/containers /run/containerd /var/lib/cni; do
  [[ -d $d ]] || { mkdir -p "$d"; made+=("$d"); }
done

inner=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n $inner ]] && kill -KILL "$inner" 2>/dev/null && wait "$inner" 2>/dev/null
  ip netns del "$ns" 2>/dev/null || true
  # Pods' cgroups (every v1 hierarchy), deepest first; their processes died with the PID namespace.
  for h in /sys/fs/cgroup/*/; do
    [[ -d ${h}kubepods ]] && find "${h}kubepods" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  for kv in "${saved[@]}"; do sysctl -qw "$kv" || true; done
  for d in ${made[@]+"${made[@]}"}; do rmdir "$d" 2>/dev/null || true; done
  say "torn down (rc $rc): no process, mount or namespace left"
  exit "$rc"
}
trap cleanup EXIT INT TERM

say "network namespace $ns: lo, the node's address 10.77.0.1, no way out"
ip netns add "$ns"
ip -n "$ns" link set lo up
# The node's interface: one end of a veth pair whose other end is in the namespace too (this
# kernel has no dummy device). Both ends stay inside: nothing is bridged, routed or NATed out.
ip -n "$ns" link add e2e0 type veth peer name e2e1
ip -n "$ns" addr add 10.77.0.1/24 dev e2e0
ip -n "$ns" link set e2e0 up
ip -n "$ns" link set e2e1 up
# Components want a default route; inside the namespace it ends at the pair.
ip -n "$ns" route add default dev e2e0
nsenter --net="/run/netns/$ns" -- sysctl -qw net.ipv4.ip_forward=1

nsenter --net="/run/netns/$ns" -- \
  unshare --pid --fork --kill-child --mount --propagation private --mount-proc -- \
  bash "$root/scripts/e2e/inner.sh" "$root" "$state" &
inner=$!
wait "$inner"
