#!/usr/bin/env bash
# The Grafana dashboard proven on real data. A real Prometheus (Debian's) scrapes, every second:
#  - voicebot-demo (simulator + OpenClaw gateway + shard): a user asks the bot twice and
#    /metrics stays up for a while (series of events that did not happen are at zero);
#  - voicebot-operator against a real kube-apiserver + etcd (scripts/setup-apiserver.sh) with
#    the CRD and the example VoiceBot applied (its Secrets missing: reconciles fail and are
#    counted, as in a real mis-configured install).
# Then: `promtool check metrics` on both /metrics; every query of every panel of the chart's
# dashboard, through Prometheus's HTTP API, must return series.
#   scripts/check-dashboards.sh        (part of scripts/test.sh; tools from scripts/setup.sh)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
for tool in prometheus promtool etcd curl python3; do
  command -v "$tool" >/dev/null || { echo "check-dashboards: $tool missing (scripts/setup.sh)" >&2; exit 1; }
done
apiserver="$root/.cache/k8s/bin/kube-apiserver"
kubectl="$(ls "$root"/.cache/k8s/*/kubectl "$root"/.cache/k8s/bin/kubectl 2>/dev/null | head -n1 || true)"
[[ -x "$apiserver" && -n "$kubectl" ]] || { echo "check-dashboards: kube-apiserver/kubectl missing (scripts/setup.sh)" >&2; exit 1; }
operator="$(workspace_bin voicebot-operator)"
demo="$(workspace_bin voicebot-demo)"

work="$(mktemp -d "${TMPDIR:-/tmp}/voicebot-dashboards-XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url seconds
  for _ in $(seq 1 $(($2 * 10))); do curl -fsk -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

# --- kube-apiserver + etcd + the operator ------------------------------------------------
etcd_port=$(port); peer_port=$(port); api_port=$(port); op_port=$(port)
etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$peer_port" \
  >"$work/etcd.log" 2>&1 &
pids+=($!)
openssl genrsa -out "$work/sa.key" 2048 2>/dev/null
token="dashboards-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
echo "$token,admin,admin,\"system:masters\"" >"$work/tokens.csv"
"$apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" --secure-port="$api_port" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --insecure-port=0 \
  --cert-dir="$work/certs" --token-auth-file="$work/tokens.csv" --authorization-mode=RBAC \
  --service-account-key-file="$work/sa.key" --service-account-signing-key-file="$work/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc --service-cluster-ip-range=10.0.0.0/24 \
  --disable-admission-plugins=ServiceAccount >"$work/apiserver.log" 2>&1 &
pids+=($!)
cat >"$work/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$api_port", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: "$token"}}]
contexts: [{name: local, context: {cluster: local, user: admin, namespace: default}}]
current-context: local
EOF
export KUBECONFIG="$work/kubeconfig"
for _ in $(seq 1 300); do "$kubectl" get namespace default >/dev/null 2>&1 && break; sleep 0.2; done
"$kubectl" get namespace default >/dev/null || { tail -20 "$work/apiserver.log" >&2; exit 1; }
"$kubectl" apply -f crds/voicebot.yaml >/dev/null
for _ in $(seq 1 100); do "$kubectl" get voicebots >/dev/null 2>&1 && break; sleep 0.2; done
"$kubectl" apply -f examples/voicebot.yaml >/dev/null
# A second bot without a shard count, whose Discord token Secret does not exist: the operator
# cannot ask Discord for a count and says so every 15 s (reason SecretMissing), which the
# "Operator reconciles" panel must show.
sed -e 's/^  name: jarvis$/  name: needs-token/' -e '/^    count: /d' examples/voicebot.yaml \
  | "$kubectl" apply -f - >/dev/null
METRICS_ADDR="127.0.0.1:$op_port" RUST_LOG=warn "$operator" >"$work/operator.log" 2>&1 &
pids+=($!)

# --- the demo: two questions, /metrics held ------------------------------------
demo_port=$(port)
espeak-ng -v en-us -s 160 -w "$work/q.wav" "Jarvis, what is two plus two?"
"$demo" --input "$work/q.wav" --repeat 2 --out "$work/out" \
  --metrics-addr "127.0.0.1:$demo_port" --hold-secs 45 --json >"$work/demo.json" 2>"$work/demo.log" &
demo_pid=$!
pids+=($demo_pid)

# --- Prometheus -----------------------------------------------------------------------------
prom_port=$(port)
cat >"$work/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: shard
    static_configs: [{targets: ["127.0.0.1:$demo_port"]}]
  - job_name: operator
    static_configs: [{targets: ["127.0.0.1:$op_port"]}]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)

wait_http "http://127.0.0.1:$op_port/metrics" 60 || { echo "check-dashboards: the operator's /metrics never came up" >&2; tail -20 "$work/operator.log" >&2; exit 1; }
wait_http "http://127.0.0.1:$demo_port/metrics" 300 || { echo "check-dashboards: the demo's /metrics never came up" >&2; tail -20 "$work/demo.log" >&2; exit 1; }
# The demo's turns: wait until it prints them (then /metrics is held for 45 s).
for _ in $(seq 1 1800); do [[ $(wc -l <"$work/demo.json") -ge 2 ]] && break; kill -0 $demo_pid 2>/dev/null || break; sleep 0.1; done
[[ $(wc -l <"$work/demo.json") -ge 2 ]] || { echo "check-dashboards: the demo gave no turns" >&2; tail -20 "$work/demo.log" >&2; exit 1; }
sleep 15   # several scrapes after the turns, so rate() has two samples of every series

# --- promtool on both /metrics ------------------------------------------------------------------
for target in "shard 127.0.0.1:$demo_port" "operator 127.0.0.1:$op_port"; do
  set -- $target
  if ! curl -fs "http://$2/metrics" | promtool check metrics >"$work/promtool-$1.txt" 2>&1; then
    echo "check-dashboards: promtool check metrics ($1):" >&2; cat "$work/promtool-$1.txt" >&2; exit 1
  fi
done

# --- every panel query returns series ---------------------------------------------------------
python3 - "$prom_port" charts/voicebot/dashboards/*.json <<'PY'
import json, sys, urllib.parse, urllib.request
port, files = sys.argv[1], sys.argv[2:]
# Panels about what the run did (two spoken turns answered, the operator reconciling a bot
# whose Secrets are missing) must show it: a value above zero, not just a series at zero.
# The others (barge-ins, ignored turns, drops, errors) did not happen here: a series is enough.
must_move = ("Voice to voice", "Stage latency", "Turns per second", "Operator reconciles")
def moved(result):
    for r in result:
        try:
            v = float(r["value"][1])
        except (KeyError, ValueError, IndexError):
            continue
        if v == v and v > 0:   # not NaN, above zero
            return True
    return False
checked, empty, flat = 0, [], []
for f in files:
    for panel in json.load(open(f))["panels"]:
        for t in panel.get("targets", []):
            q = (t["expr"].replace("$__rate_interval", "1m")
                 .replace('"$agent"', '".*"').replace('"$shard"', '".*"'))
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            res = json.load(urllib.request.urlopen(url, timeout=10))
            checked += 1
            if res.get("status") != "success" or not res["data"]["result"]:
                empty.append(f'{panel["title"]}: {t["expr"]} -> {res.get("error") or "no series"}')
            elif panel["title"].startswith(must_move) and not moved(res["data"]["result"]):
                flat.append(f'{panel["title"]}: {t["expr"]} -> {res["data"]["result"]}')
if empty or flat:
    if empty:
        print("check-dashboards: panel queries without data:\n  " + "\n  ".join(empty), file=sys.stderr)
    if flat:
        print("check-dashboards: panels at zero after the run's turns:\n  " + "\n  ".join(flat), file=sys.stderr)
    sys.exit(1)
print(f"check-dashboards: promtool clean on the shard's and the operator's /metrics; {checked} panel queries all return series, and the panels of what the run did are above zero")
PY
