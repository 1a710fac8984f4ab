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

say "the project's image (voicebot:0.1.0, assembled without Docker) imported"
ctr --address "$sock" -n k8s.io images import --platform linux/amd64 "$C/images/voicebot.tar" >/dev/null
imported voicebot:0.1.0 || die "voicebot:0.1.0 was not imported"

say "helm install: the CRD, the operator and its RBAC"
helm install voicebot "$root/charts/voicebot" --namespace voicebot --create-namespace \
  --wait --timeout 3m >"$C/logs/helm.log" 2>&1 || die "helm install: $(tail -n 20 "$C/logs/helm.log")"
until_ok 120 kubectl -n voicebot wait --for=condition=Available deploy --all --timeout 5s \
  || die "the operator is not Ready: $(kubectl -n voicebot describe pods 2>&1 | tail -n 20)"
say "operator Ready (it reached the API through the kubernetes Service: kube-proxy's rules)"

say "kubectl apply: a VoiceBot, its Secrets"
kubectl -n voicebot create secret generic discord-bot --from-literal=token=e2e-not-a-real-token >/dev/null
kubectl -n voicebot create secret generic openclaw --from-literal=token=e2e-gateway-token >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: voicebot.dev/v1alpha1
kind: VoiceBot
metadata: {name: jarvis, namespace: voicebot}
spec:
  discord:
    applicationId: "1100000000000000001"
    tokenSecret: {name: discord-bot, key: token}
  shards: {count: 1, perPod: 1}
  image: voicebot:0.1.0
  imagePullPolicy: IfNotPresent
  resources: {cpu: 500m, memory: 2Gi}
  modelStore: {source: volume, hostPath: "$root/.cache/models"}
  agents: [{name: jarvis}]
  # Nothing listens there yet: the pod runs in its degraded mode (state in memory).
  redis: {url: "redis://$node_ip:6379"}
  gateway:
    url: ws://$node_ip:18789
    tokenSecret: {name: openclaw, key: token}
YAML
until_ok 120 kubectl -n voicebot get pod jarvis-shard-0 \
  || die "the operator made no shard pod: $(kubectl -n voicebot logs deploy/voicebot-operator 2>&1 | tail -n 20)"
until_ok 180 sh -c "kubectl -n voicebot get pod jarvis-shard-0 -o jsonpath='{.status.containerStatuses[0].state.running}' | grep -q startedAt" \
  || die "the shard pod did not start: $(kubectl -n voicebot describe pod jarvis-shard-0 2>&1 | tail -n 25)"
say "shard pod jarvis-shard-0 Running (its image, the models from the node, the chart's security context)"
kubectl get nodes,pods -A -o wide >&2
kubectl -n voicebot get voicebot jarvis -o jsonpath='{.status}' >&2; echo >&2
kubectl -n voicebot logs jarvis-shard-0 2>&1 | tail -n 15 >&2
say "done"
