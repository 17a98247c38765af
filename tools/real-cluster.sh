#!/usr/bin/env bash
# Run an exported labkit lab on a real cluster (kind or minikube, already created and current
# in kubectl): install Knative Serving + Eventing, Istio, KServe and Flagger at pinned versions,
# apply the export, then check it with kubectl and curl.
#
#   labkit export data/manifests/knative-hello.yaml -o out/hello
#   tools/real-cluster.sh out/hello            # install (once) + apply + check
#   SKIP_INSTALL=1 tools/real-cluster.sh out/x # apply + check only
#
# Versions: the releases whose CRDs labkit's exports are validated against (tests/crds/SOURCES.md).
# Each step follows the project's own install guide, cited beside it. Needs kubectl, curl, and
# istioctl on PATH (https://istio.io/latest/docs/setup/getting-started/#download).
set -euo pipefail

KNATIVE_SERVING=knative-v1.23.0
KNATIVE_EVENTING=knative-v1.22.0
NET_ISTIO=knative-v1.23.0
ISTIO=1.30.3
CERT_MANAGER=v1.16.2
KSERVE=v0.20.0
FLAGGER=v1.44.0

DIR=${1:?usage: tools/real-cluster.sh EXPORT_DIR}
[ -f "$DIR/README.txt" ] || { echo "$DIR has no README.txt: run labkit export FILE... -o $DIR" >&2; exit 2; }
GH=https://github.com

wait_deployments() { kubectl wait --for=condition=Available deployment --all -n "$1" --timeout=300s; }

install() {
  # Istio, default profile (Flagger needs its telemetry): https://istio.io/latest/docs/setup/install/istioctl/
  istioctl version --remote=false | grep -q "$ISTIO" || { echo "need istioctl $ISTIO" >&2; exit 2; }
  istioctl install -y --set profile=default
  # Prometheus for Istio metrics (Flagger's analysis): Istio's samples/addons.
  kubectl apply -f "https://raw.githubusercontent.com/istio/istio/$ISTIO/samples/addons/prometheus.yaml"

  # Knative Serving with Istio as networking layer, Magic DNS (sslip.io):
  # https://knative.dev/docs/install/yaml-install/serving/install-serving-with-yaml/
  kubectl apply -f "$GH/knative/serving/releases/download/$KNATIVE_SERVING/serving-crds.yaml"
  kubectl apply -f "$GH/knative/serving/releases/download/$KNATIVE_SERVING/serving-core.yaml"
  kubectl apply -f "$GH/knative/net-istio/releases/download/$NET_ISTIO/net-istio.yaml"
  kubectl apply -f "$GH/knative/serving/releases/download/$KNATIVE_SERVING/serving-default-domain.yaml"
  wait_deployments knative-serving

  # Knative Eventing, in-memory channel, MT channel broker:
  # https://knative.dev/docs/install/yaml-install/eventing/install-eventing-with-yaml/
  for f in eventing-crds eventing-core in-memory-channel mt-channel-broker; do
    kubectl apply -f "$GH/knative/eventing/releases/download/$KNATIVE_EVENTING/$f.yaml"
  done
  wait_deployments knative-eventing

  # KServe, Serverless mode (needs Knative, Istio, cert-manager):
  # https://kserve.github.io/website/latest/admin/serverless/serverless/
  kubectl apply -f "$GH/cert-manager/cert-manager/releases/download/$CERT_MANAGER/cert-manager.yaml"
  wait_deployments cert-manager
  kubectl apply --server-side -f "$GH/kserve/kserve/releases/download/$KSERVE/kserve.yaml"
  wait_deployments kserve
  kubectl apply --server-side -f "$GH/kserve/kserve/releases/download/$KSERVE/kserve-cluster-resources.yaml"

  # Flagger for Istio, Prometheus in istio-system: https://docs.flagger.app/install/flagger-install-on-kubernetes
  kubectl apply -k "github.com/fluxcd/flagger//kustomize/istio?ref=$FLAGGER"
  wait_deployments istio-system
}

[ -n "${SKIP_INSTALL:-}" ] || install

# The export's own first steps (README.txt): images to build and models to copy.
if { [ -f "$DIR/Dockerfile" ] || [ -d "$DIR/upload" ]; } && [ -z "${STEPS_DONE:-}" ]; then
  echo "Build the images / copy the models as $DIR/README.txt says, then rerun with" \
       "SKIP_INSTALL=1 STEPS_DONE=1." >&2
  exit 3
fi
kubectl apply -f "$DIR/"

# Checks: every object Ready, then each Knative Service answers through the Istio ingress
# gateway (port-forwarded; the Host header is the route's, as Knative expects).
for kind in ksvc inferenceservice broker trigger; do  # a Flagger Canary reports Promoted, not Ready
  if kubectl get "$kind" -A -o name 2>/dev/null | grep -q .; then
    kubectl wait --for=condition=Ready "$kind" --all -A --timeout=300s
  fi
done
kubectl wait --for=condition=Available deployment --all -A --timeout=300s
kubectl port-forward -n istio-system svc/istio-ingressgateway 18080:80 >/dev/null 2>&1 &
FORWARD=$!
trap 'kill "$FORWARD"' EXIT
sleep 3  # port-forward has no readiness signal
status=0
for url in $(kubectl get ksvc -A -o jsonpath='{range .items[*]}{.status.url}{"\n"}{end}'); do
  host=${url#*://}
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" http://127.0.0.1:18080/) || true
  echo "GET $url -> $code"
  [ "$code" = 200 ] || status=1
done
exit $status
