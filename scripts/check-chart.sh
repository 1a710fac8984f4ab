#!/usr/bin/env bash
# Lints the Helm chart and validates what it renders, offline and strictly:
#  - `helm lint --strict` with the defaults and with every option on;
#  - `helm template` output against the Kubernetes 1.35 OpenAPI schemas (kubernetes-validate);
#  - custom resources (the chart's example bot, examples/voicebot.yaml) against the generated
#    VoiceBot CRD schema;
#  - the chart's CRD copy equals crds/voicebot.yaml.
# Part of scripts/test.sh; the tools come from scripts/setup.sh (.cache/k8s).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
helm="$root/.cache/k8s/bin/helm"
validate="$root/.cache/k8s/venv/bin/kubernetes-validate"
py="$root/.cache/k8s/venv/bin/python"
[[ -x "$helm" && -x "$validate" ]] || { echo "check-chart: run scripts/setup.sh first" >&2; exit 1; }
chart=charts/voicebot
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

cmp -s crds/voicebot.yaml "$chart/crds/voicebot.yaml" \
  || { echo "check-chart: $chart/crds/voicebot.yaml differs from crds/voicebot.yaml (cp it)" >&2; exit 1; }

all_on=(--set redis.enabled=true --set serviceMonitor.enabled=true --set exampleBot.enabled=true --set networkPolicy.enabled=true)
"$helm" lint --strict "$chart" >/dev/null
"$helm" lint --strict "$chart" "${all_on[@]}" >/dev/null
"$helm" lint --strict "$chart" --set operator.watchNamespace=bots >/dev/null

i=0
for args in "" "${all_on[*]}" "--set operator.watchNamespace=bots --set grafanaDashboard.enabled=false"; do
  i=$((i + 1))
  # shellcheck disable=SC2086
  "$helm" template voicebot "$chart" --namespace voicebot --include-crds $args > "$out/render$i.yaml"
  # Built-in kinds strictly against Kubernetes 1.35 (custom kinds are only warned about and
  # are checked against their CRD below).
  "$validate" -k 1.35.0 --strict --quiet "$out/render$i.yaml" \
    || { echo "check-chart: the chart rendered with '$args' is not valid" >&2; exit 1; }
done

# What the operator applies for the example bot, strictly too.
"$(workspace_bin voicebot-operator)" render examples/voicebot.yaml > "$out/operator.yaml"
"$validate" -k 1.35.0 --strict --quiet "$out/operator.yaml" \
  || { echo "check-chart: the operator's objects are not valid" >&2; exit 1; }

# Custom resources against the CRD's own schema.
"$py" - crds/voicebot.yaml examples/voicebot.yaml "$out/render2.yaml" <<'PY'
import sys, yaml, jsonschema
crd = yaml.safe_load(open(sys.argv[1]))
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
def strip(s):
    # OpenAPI extras jsonschema does not know: nullable -> allow null.
    if isinstance(s, dict):
        if s.pop("nullable", False) and "type" in s:
            s["type"] = [s["type"], "null"]
        for v in list(s.values()):
            strip(v)
    elif isinstance(s, list):
        for v in s:
            strip(v)
strip(schema)
n = 0
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "VoiceBot":
            jsonschema.validate(doc, schema)
            n += 1
if n < 2:
    sys.exit(f"expected the example VoiceBots, found {n}")
# And a bad one is refused.
bad = {"apiVersion": "voicebot.dev/v1alpha1", "kind": "VoiceBot", "metadata": {"name": "x"},
       "spec": {"discord": {"applicationId": "not-a-snowflake", "tokenSecret": {"name": "a", "key": "b"}},
                "image": "i", "agents": [], "redis": {}, "gateway": {"url": "http://x", "tokenSecret": {"name": "a", "key": "b"}}}}
try:
    jsonschema.validate(bad, schema)
    sys.exit("an invalid VoiceBot passed the CRD schema")
except jsonschema.ValidationError:
    pass
print(f"check-chart: {n} VoiceBots valid against the CRD schema")
PY
echo "check-chart: helm lint clean; rendered manifests valid against Kubernetes 1.35"
