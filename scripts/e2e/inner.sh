#!/usr/bin/env bash
# scripts/e2e.sh's inside: PID 1 of the run's PID namespace, in its own mount namespace and the
# run's network namespace. Every daemon started here dies with it, and every mount made here
# (bind mounts, containerd's overlays, the pods' secrets) goes with the namespace.
#   inner.sh ROOT STATE
set -euo pipefail
root="$1"
C="$2"
bin="$root/.cache/k8s/bin"
t0=$(date +%s)
say() { printf '\033[1;34m[e2e inside %3ss]\033[0m %s\n' "$(($(date +%s) - t0))" "$*" >&2; }
die() { printf '\033[1;31m[e2e inside] error:\033[0m %s\n' "$*" >&2; exit 1; }
node_ip=10.77.0.1
api="https://$node_ip:6443"
export PATH="$bin:$PATH"

# Waits up to $1 seconds for the command after it to succeed.
until_ok() {
  local limit=$1; shift
  local end=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    [[ $(date +%s) -lt $end ]] || return 1
    sleep 0.5
  done
}
# Starts a daemon in the background, its output in $C/logs/NAME.log.
start() {
  local name=$1; shift
  "$@" >"$C/logs/$name.log" 2>&1 &
  echo $! >"$C/logs/$name.pid"
}
# The last lines of a daemon's log, for an error message.
tail_of() { tail -n 20 "$C/logs/$1.log" 2>/dev/null; }

mkdir -p "$C"/{logs,pki,etcd,kubelet,containerd,cni/net.d,cni/ipam,images} \
  "$C"/{var-lib-kubelet,var-log-pods,var-log-containers,var-lib-cni}
# Paths the kubelet and containerd do not let us choose, redirected into $C (this mount
# namespace only): containerd's shim sockets, the kubelet's root and logs, libcni's cache.
mount -t tmpfs tmpfs /run/containerd
mount --bind "$C/var-lib-kubelet" /var/lib/kubelet
mount --bind "$C/var-log-pods" /var/log/pods
mount --bind "$C/var-log-containers" /var/log/containers
mount --bind "$C/var-lib-cni" /var/lib/cni

# The network rule: nothing here can reach the machine's interfaces or the outside.
check_sealed() {
  local names
  names=$(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1)
  for n in $names; do
    case $n in lo | e2e0 | e2e1 | cni0 | veth*) ;; *) die "interface $n in the namespace" ;; esac
  done
  # The machine's resolver, for one: routed (if at all) into the namespace's own veth pair.
  local via
  via=$(ip route get 10.255.255.53 2>/dev/null | head -n1)
  [[ -z $via || $via == *"dev e2e0"* ]] || die "a route out of the namespace: $via"
}
check_sealed

say "PKI: a CA, the apiserver's certificate (node IP, service IP, kubernetes.default names), the service-account key"
(
  cd "$C/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=voicebot-e2e-ca \
    -keyout ca.key -out ca.crt -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
    -keyout apiserver.key -out apiserver.csr 2>/dev/null
  printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
    'extendedKeyUsage=serverAuth' \
    "subjectAltName=IP:10.96.0.1,IP:$node_ip,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
    >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -out apiserver.crt -extfile apiserver.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)
# Static tokens: one identity per component (the Node authorizer knows the kubelet by its name).
token() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
declare -A tokens=(
  [admin]="$(token)" [kubelet]="$(token)" [proxy]="$(token)"
  [scheduler]="$(token)" [controller]="$(token)"
)
{
  echo "${tokens[admin]},admin,admin,system:masters"
  echo "${tokens[kubelet]},system:node:e2e-node,kubelet,system:nodes"
  echo "${tokens[proxy]},system:kube-proxy,kube-proxy"
  echo "${tokens[scheduler]},system:kube-scheduler,kube-scheduler"
  echo "${tokens[controller]},system:kube-controller-manager,kube-controller-manager"
} >"$C/pki/tokens.csv"
kubeconfig() {
  cat >"$C/$1.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "$api", certificate-authority: "$C/pki/ca.crt"}}]
users: [{name: $1, user: {token: "${tokens[$1]}"}}]
contexts: [{name: e2e, context: {cluster: e2e, user: $1}}]
current-context: e2e
YAML
}
for who in admin kubelet proxy scheduler controller; do kubeconfig "$who"; done
export KUBECONFIG="$C/admin.kubeconfig"

say "etcd, then the apiserver"
start etcd etcd --data-dir "$C/etcd" --listen-client-urls http://127.0.0.1:2379 \
  --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380
start apiserver kube-apiserver --etcd-servers http://127.0.0.1:2379 \
  --advertise-address "$node_ip" --bind-address 0.0.0.0 --secure-port 6443 \
  --service-cluster-ip-range 10.96.0.0/16 \
  --tls-cert-file "$C/pki/apiserver.crt" --tls-private-key-file "$C/pki/apiserver.key" \
  --client-ca-file "$C/pki/ca.crt" --token-auth-file "$C/pki/tokens.csv" \
  --service-account-key-file "$C/pki/sa.pub" --service-account-signing-key-file "$C/pki/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --authorization-mode Node,RBAC --allow-privileged=true \
  --kubelet-preferred-address-types InternalIP --enable-admission-plugins NodeRestriction
until_ok 90 kubectl get --raw /readyz || die "the apiserver is not ready: $(tail_of apiserver)"

say "controller manager and scheduler"
start controller kube-controller-manager --kubeconfig "$C/controller.kubeconfig" \
  --service-account-private-key-file "$C/pki/sa.key" --root-ca-file "$C/pki/ca.crt" \
  --use-service-account-credentials --leader-elect=false --cluster-cidr 10.88.0.0/16 \
  --bind-address 127.0.0.1
start scheduler kube-scheduler --kubeconfig "$C/scheduler.kubeconfig" --leader-elect=false \
  --bind-address 127.0.0.1

say "containerd (CRI v1alpha2 for kubelet 1.20; cgroupfs; no OOM score below 0 here)"
sock="$C/containerd/containerd.sock"
cat >"$C/cni/net.d/10-e2e.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "e2e", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$C/cni/ipam",
            "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
cat >"$C/containerd/config.toml" <<TOML
version = 2
root = "$C/containerd/root"
state = "$C/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "e2e.local/pause:3.4"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$C/cni/net.d"
    max_conf_num = 1
TOML
start containerd containerd --config "$C/containerd/config.toml"
until_ok 30 ctr --address "$sock" version || die "containerd did not start: $(tail_of containerd)"

say "images, built here and imported (no registry): the sandbox's pause"
mkdir -p "$C/images/pause"
cp "$bin/pause" "$C/images/pause/pause"
python3 "$root/scripts/e2e/mkimage.py" "$C/images/pause" "$C/images/pause.tar" \
  e2e.local/pause:3.4 --entrypoint '["/pause"]' >/dev/null
ctr --address "$sock" -n k8s.io images import --platform linux/amd64 "$C/images/pause.tar" >/dev/null
imported() { [[ $(ctr --address "$sock" -n k8s.io images ls -q) == *"$1"* ]]; }
imported e2e.local/pause:3.4 || die "the pause image was not imported"

say "kubelet and kube-proxy"
echo "nameserver $node_ip" >"$C/resolv.conf"
cat >"$C/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
address: $node_ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$node_ip]
resolvConf: $C/resolv.conf
volumePluginDir: $C/kubelet/plugins
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
runtimeRequestTimeout: 10m
serializeImagePulls: false
YAML
start kubelet kubelet --config "$C/kubelet/config.yaml" --kubeconfig "$C/kubelet.kubeconfig" \
  --container-runtime remote --container-runtime-endpoint "unix://$sock" \
  --pod-infra-container-image e2e.local/pause:3.4 --hostname-override e2e-node \
  --node-ip "$node_ip" --v 1
start proxy kube-proxy --kubeconfig "$C/proxy.kubeconfig" --hostname-override e2e-node \
  --proxy-mode iptables --cluster-cidr 10.88.0.0/16 --conntrack-max-per-core 0 \
  --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256
until_ok 120 kubectl wait --for=condition=Ready node/e2e-node --timeout 5s \
  || die "the node did not turn Ready: $(tail_of kubelet)"
say "node e2e-node Ready"

say "a pod from the local image, through the scheduler, the kubelet and containerd"
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: hello, namespace: default}
spec:
  automountServiceAccountToken: false
  containers:
  - name: pause
    image: e2e.local/pause:3.4
    imagePullPolicy: Never
    securityContext: {runAsNonRoot: true, runAsUser: 65534, readOnlyRootFilesystem: true,
                      allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
YAML
until_ok 120 kubectl wait --for=condition=Ready pod/hello --timeout 5s \
  || die "the pod did not run: $(kubectl describe pod hello 2>&1 | tail -n 15)"
ip=$(kubectl get pod hello -o jsonpath='{.status.podIP}')
check_sealed
say "pod hello Running on the bridge at $ip"
kubectl delete pod hello --wait=false >/dev/null

say "the project's images (voicebot:0.1.0 and the chart's Redis, assembled without Docker) imported"
ctr --address "$sock" -n k8s.io images import --platform linux/amd64 "$C/images/voicebot.tar" >/dev/null
ctr --address "$sock" -n k8s.io images import --platform linux/amd64 "$C/images/redis.tar" >/dev/null
imported voicebot:0.1.0 || die "voicebot:0.1.0 was not imported"
imported e2e.local/redis:7.0 || die "e2e.local/redis:7.0 was not imported"

say "the cluster's DNS: dnsmasq on $node_ip answers service names (kept current from the API), forwards nothing"
mkdir -p "$C/dns"
start dns dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-poll --bind-interfaces \
  --listen-address="$node_ip" --port=53 --hostsdir="$C/dns" --user=root --pid-file= \
  --log-facility=- --local-ttl=1 --local=/#/
# Every other name is NXDOMAIN (`--local=/#/`: a resolver then tries its next search domain).
# Each service as <name>.<namespace>, …svc and …svc.cluster.local; dnsmasq rereads the directory
# when the file changes (names starting with a dot are ignored while written).
sync_dns() {
  while true; do
    kubectl get svc -A -o jsonpath='{range .items[*]}{.spec.clusterIP} {.metadata.name}.{.metadata.namespace} {.metadata.name}.{.metadata.namespace}.svc {.metadata.name}.{.metadata.namespace}.svc.cluster.local{"\n"}{end}' 2>/dev/null \
      | grep -E '^[0-9]' >"$C/dns/.services" && mv "$C/dns/.services" "$C/dns/services"
    sleep 1
  done
}
sync_dns &
# One A query to the node's DNS, the answer's address (what a pod's resolver would get).
dns_a() {
  python3 - "$node_ip" "$1" <<'PY'
import socket, sys
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
q += b"".join(bytes([len(p)]) + p.encode() for p in sys.argv[2].split(".")) + b"\x00\x00\x01\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q, (sys.argv[1], 53))
r = s.recv(512)
sys.exit(1) if r[3] & 0xF or r[7] == 0 else print(".".join(map(str, r[-4:])))
PY
}
until_ok 30 dns_a kubernetes.default.svc.cluster.local || die "dnsmasq does not answer: $(tail_of dns)"
say "kubernetes.default.svc.cluster.local → $(dns_a kubernetes.default.svc.cluster.local); example.com → $(dns_a example.com || echo 'NXDOMAIN (nothing is forwarded)')"

say "Discord (the project's simulator) and the OpenClaw gateway (npm openclaw, fake model) on $node_ip"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$C/discord-token"
start sim "$root/target/release/voicebot-sim" serve --host "$node_ip" --tls-dir "$C/sim-tls" \
  --token-file "$C/discord-token" --input "$C/question.wav" --models-dir "$root/.cache/models" \
  --ready-file "$C/sim.json" --control 127.0.0.1:3099
until_ok 120 test -s "$C/sim.json" || die "the simulator did not start: $(tail_of sim)"
peer() { python3 -c "import json,sys; print(json.load(open('$C/sim.json'))[sys.argv[1]])" "$1"; }
say "simulator: REST $(peer api_proxy), gateway $(peer gateway_url), voice wss://$(peer voice_endpoint); OpenClaw $(peer openclaw_url)"
say "OpenClaw warmed (a cost of this test peer, kept out of the pods' first turns): $(grep -h 'first run' "$C/logs/sim.log" | sed 's/^voicebot-sim: the gateway.s //' | paste -sd ';' - | sed 's/;/; /g')"

say "helm install: the CRD, the operator and its RBAC, the chart's Redis"
helm install voicebot "$root/charts/voicebot" --namespace voicebot --create-namespace \
  --set redis.enabled=true --set redis.image=e2e.local/redis:7.0 \
  --wait --timeout 3m >"$C/logs/helm.log" 2>&1 || die "helm install: $(tail -n 20 "$C/logs/helm.log")"
until_ok 120 kubectl -n voicebot wait --for=condition=Available deploy --all --timeout 5s \
  || die "the operator or Redis is not Ready: $(kubectl -n voicebot describe pods 2>&1 | tail -n 20)"
say "operator and Redis Ready (the operator reached the API through the kubernetes Service: kube-proxy's rules)"

say "kubectl apply: examples/voicebot.yaml, with what this machine lacks changed (no GPU, 2 cores, one shard; Discord is the simulator)"
kubectl -n voicebot create secret generic discord-bot --from-file=token="$C/discord-token" >/dev/null
kubectl -n voicebot create secret generic openclaw --from-literal=token="$(peer openclaw_token)" >/dev/null
# kubectl reads the YAML (no YAML library needed), python edits the JSON.
kubectl -n voicebot create --dry-run=client -o json -f "$root/examples/voicebot.yaml" >"$C/example.json"
python3 - "$C/example.json" "$C/sim.json" "$root/.cache/models" >"$C/voicebot.json" <<'PY'
import json, sys
vb = json.load(open(sys.argv[1]))
sim = json.load(open(sys.argv[2]))
s = vb["spec"]
s["discord"].update(applicationId="1100000000000000001", apiProxy=sim["api_proxy"],
                    gatewayUrl=sim["gateway_url"])
s["shards"] = {"count": 1, "perPod": 1}
s["resources"] = {"cpu": "800m", "memory": "3Gi"}           # no GPU; two pods share 2 cores
s["modelStore"] = {"source": "volume", "hostPath": sys.argv[3]}  # nothing to download from
s["gateway"]["url"] = sim["openclaw_url"]
s["metrics"]["serviceMonitor"] = False                       # no Prometheus Operator here
json.dump(vb, sys.stdout, indent=1)
PY
kubectl -n voicebot apply -f "$C/voicebot.json" >/dev/null
until_ok 120 kubectl -n voicebot get pod jarvis-shard-0 \
  || die "the operator made no shard pod: $(kubectl -n voicebot logs deploy/voicebot-operator 2>&1 | tail -n 20)"
shard_ready() {
  until_ok "$2" kubectl -n voicebot wait --for=condition=Ready "pod/$1" --timeout 5s \
    || die "$1 is not Ready: $(kubectl -n voicebot describe pod "$1" 2>&1 | tail -n 25; kubectl -n voicebot logs "$1" 2>&1 | tail -n 20)"
}
shard_ready jarvis-shard-0 240
say "jarvis-shard-0 Ready (its /readyz: the models loaded, its shard received READY from the simulator)"

# Where a pod's turns spent their time: its own /metrics (Prometheus' view), mean per stage.
stages() {
  local ip
  ip=$(kubectl -n voicebot get pod "$1" -o jsonpath='{.status.podIP}')
  curl -s --max-time 5 "http://$ip:9090/metrics" | python3 -c '
import re, sys
sums, counts = {}, {}
for line in sys.stdin:
    m = re.match(r"voicebot_stage_seconds_(sum|count)\{([^}]*)\} (\S+)", line)
    if m:
        stage = re.search(r"stage=\"([^\"]+)\"", m.group(2)).group(1)
        (sums if m.group(1) == "sum" else counts)[stage] = float(m.group(3))
print(", ".join(f"{k} {sums[k] / counts[k] * 1e3:.0f} ms" for k in sums if counts.get(k)) or "no turn")'
}
# A simulated user in guild $1 says the question; the answer is transcribed.
converse() {
  local out="$C/converse-$2.json"
  curl -sS -X POST --max-time 200 "http://127.0.0.1:3099/converse/$1" >"$out" \
    || die "the simulator's control API: $(tail_of sim)"
  python3 - "$out" "$3" <<'PY' || die "not answered: $(cat "$out"); $(kubectl -n voicebot logs -l app.kubernetes.io/instance=jarvis,app.kubernetes.io/component=shard --tail 20 2>&1)"
import json, re, sys
r = json.load(open(sys.argv[1]))
if "error" in r:
    sys.exit(f"the simulator: {r['error']}")
heard = r["transcript"].lower()
assert re.search(r"\b(four|4)\b", heard), f"the answer was {r['transcript']!r}"
assert r["dave_version"] == 1, f"DAVE version {r['dave_version']}"
if sys.argv[2] == "rejoin":
    assert r["rejoined"], "the bot did not come back to the voice channel by itself"
print(f"guild {r['guild']} (shard {r['owners']}): the bot answered {r['transcript']!r}, "
      f"{r['answer_ms']:.0f} ms of speech, its first packet {r['latency_ms']:.0f} ms after the user stopped "
      f"talking, DAVE v{r['dave_version']} epoch {r['dave_epoch']}"
      + (", rejoined by itself" if r["rejoined"] else f", after /jarvis join ({r['join_reply']!r})"))
PY
}
say "$(converse 0 first join)"
say "jarvis-shard-0 stages (mean, from its /metrics): $(stages jarvis-shard-0)"

say "reshard: spec.shards.count 1 → 2"
kubectl -n voicebot patch voicebot jarvis --type merge -p '{"spec":{"shards":{"count":2}}}' >/dev/null
until_ok 300 sh -c "kubectl -n voicebot get voicebot jarvis -o jsonpath='{.status.sharding.shardCount} {.status.phase}' | grep -qx '2 Ready'" \
  || die "the reshard did not finish: $(kubectl -n voicebot get voicebot jarvis -o yaml | tail -n 30)"
shard_ready jarvis-shard-0 240
shard_ready jarvis-shard-1 240
say "two pods Ready, shards $(curl -s 127.0.0.1:3099/state | python3 -c 'import json,sys; print(json.load(sys.stdin)["connected_shards"])') connected"
say "$(converse 0 after-reshard rejoin)"
say "$(converse 1 second-shard join)"
say "jarvis-shard-0: $(stages jarvis-shard-0); jarvis-shard-1: $(stages jarvis-shard-1)"
curl -s 127.0.0.1:3099/state >"$C/state.json"
python3 - "$C/state.json" <<'PY' || die "$(cat "$C/state.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["connected_shards"] == [[0, 2], [1, 2]], f"connected shards {s['connected_shards']}"
assert not s["double_owners"], f"two sessions owned one guild: {s['double_owners']}"
for g in s["guilds"]:
    assert len(g["owners"]) == 1, g
PY
say "no guild was ever owned by two connected sessions ($(python3 -c "import json; print(json.load(open('$C/state.json'))['identifies'])" ) IDENTIFYs in all)"

say "no secret in any log: the pods', the operator's, the simulator's, the cluster's"
for pod in $(kubectl -n voicebot get pods -o name); do
  kubectl -n voicebot logs --all-containers "$pod" >"$C/logs/pod-${pod#pod/}.log" 2>&1 || true
done
redis_pw=$(kubectl -n voicebot get secret voicebot-redis -o jsonpath='{.data.password}' | base64 -d)
seal_key=$(kubectl -n voicebot get secret voicebot-redis -o jsonpath='{.data.sealKey}' | base64 -d)
for name in "Discord token:$(cat "$C/discord-token")" "OpenClaw token:$(peer openclaw_token)" \
  "Redis password:$redis_pw" "seal key:$seal_key"; do
  value=${name#*:}
  [[ ${#value} -ge 16 ]] || die "the ${name%%:*} is too short to look for"
  leaked=$(grep -lF -- "$value" "$C"/logs/*.log || true)
  [[ -z $leaked ]] || die "the ${name%%:*} is in $leaked"
done
say "$(ls "$C"/logs/*.log | wc -l) logs ($(cat "$C"/logs/*.log | wc -c) bytes) hold none of the 4 secrets"

say "kubectl delete voicebot: the finalizer cleans Redis, the children are garbage-collected"
redis_ip=$(kubectl -n voicebot get svc voicebot-redis -o jsonpath='{.spec.clusterIP}')
redis_pw=$(kubectl -n voicebot get secret voicebot-redis -o jsonpath='{.data.password}' | base64 -d)
keys() { REDISCLI_AUTH="$redis_pw" redis-cli -h "$redis_ip" --scan --pattern 'voicebot:voicebot:jarvis:*' | wc -l; }
before=$(keys)
[[ $before -gt 0 ]] || die "the bot kept nothing in the chart's Redis"
kubectl -n voicebot delete voicebot jarvis --timeout 120s >/dev/null \
  || die "delete: $(kubectl -n voicebot logs deploy/voicebot-operator 2>&1 | tail -n 20)"
until_ok 120 sh -c "[ -z \"\$(kubectl -n voicebot get statefulset,pod,configmap,service,pdb -l app.kubernetes.io/instance=jarvis -o name 2>/dev/null)\" ]" \
  || die "children left: $(kubectl -n voicebot get all,configmap,pdb -l app.kubernetes.io/instance=jarvis 2>&1)"
after=$(keys)
[[ $after -eq 0 ]] || die "$after Redis keys of the bot left"
say "deleted: $before Redis keys removed by the finalizer; StatefulSet, pods, ConfigMap, Service, PDB collected"
check_sealed
say "done"
