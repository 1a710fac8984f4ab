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
# The scenario: the node turns Ready and a pod runs from a locally built image (no registry);
# `helm install` (operator, CRD, Redis); `kubectl apply` of examples/voicebot.yaml (adapted to
# this machine: no GPU, one shard, Discord = the project's simulator on the node address, the
# OpenClaw gateway beside it); the shard pod Ready; a simulated user's question answered over
# RTP (DAVE); `shards.count` 1 → 2, no guild owned twice, answered again in both shards;
# `kubectl delete voicebot`: the finalizer empties Redis, the children are collected.
#
#   sudo scripts/e2e.sh            (root: namespaces, mounts, cgroups)
# Research and the reasons for each flag: docs/e2e-kubernetes-plan.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
t0=$(date +%s)
say() { printf '\033[1;34m[e2e %3ss]\033[0m %s\n' "$(($(date +%s) - t0))" "$*" >&2; }
die() { printf '\033[1;31m[e2e] error:\033[0m %s\n' "$*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root: it makes network, PID and mount namespaces and cgroups"

"$root/scripts/setup.sh"
"$root/scripts/setup-k8s-node.sh"
state="$root/.cache/e2e"
rm -rf "$state" && mkdir -p "$state/images"
say "release build of the binaries the image holds, and of the simulator (voicebot-sim)"
cargo build --release --locked -p voicebot-shard -p voicebot-operator -p voicebot-models \
  -p voicebot-demo
# The voice server's certificate, for the node address; the image trusts it.
"$root/target/release/voicebot-sim" cert --dir "$state/sim-tls" --host 10.77.0.1 >/dev/null
"$root/scripts/e2e/image.sh" "$root" "$state/images/voicebot.tar" "$state/sim-tls/cert.pem"
"$root/scripts/e2e/redis-image.sh" "$root" "$state/images/redis.tar" e2e.local/redis:7.0
say "images: voicebot:0.1.0 $(du -m "$state/images/voicebot.tar" | cut -f1) MB, e2e.local/redis:7.0 $(du -m "$state/images/redis.tar" | cut -f1) MB"
# What the simulated users say (as scripts/demo.sh makes it): 48 kHz stereo, as Discord clients send.
espeak-ng -v en-us -s 160 -w "$state/q.wav" "Jarvis, what is two plus two?"
sox -n -r 22050 -c 1 "$state/gap.wav" trim 0 0.5
sox "$state/gap.wav" "$state/q.wav" "$state/gap.wav" -r 48000 -c 2 "$state/question.wav"
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
