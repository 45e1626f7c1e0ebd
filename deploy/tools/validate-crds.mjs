// Validates custom resources against the schemas that the npm packages
// @kubernetes-models/keda, @kubernetes-models/prometheus-operator,
// @kubernetes-models/cloudnative-pg and @kubernetes-models/gateway-api
// generate from the upstream CRDs and API types (types, enums, required
// fields, patterns; unknown fields pass, as the API server prunes them). Reads a JSON array of rendered resources on stdin;
// prints one line per resource; exits 1 if any is invalid.
//
//   node deploy/tools/validate-crds.mjs <NODE_MODULES_DIR> < resources.json
//
// Kinds with no schema package here (RabbitmqCluster, Barman Cloud
// ObjectStore, Envoy Gateway's EnvoyProxy) are reported as skipped;
// deploy/check.sh checks their essentials itself.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";

const modules = process.argv[2];
const models = {
  "keda.sh/v1alpha1/ScaledObject": "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject.js",
  "keda.sh/v1alpha1/TriggerAuthentication": "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication.js",
  "monitoring.coreos.com/v1/ServiceMonitor": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js",
  "monitoring.coreos.com/v1/PodMonitor": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor.js",
  "monitoring.coreos.com/v1/PrometheusRule": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule.js",
  "postgresql.cnpg.io/v1/Cluster": "@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1/Cluster.js",
  "postgresql.cnpg.io/v1/ScheduledBackup": "@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1/ScheduledBackup.js",
  "gateway.networking.k8s.io/v1/Gateway": "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/Gateway.js",
  "gateway.networking.k8s.io/v1/HTTPRoute": "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute.js",
};

const resources = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const resource of resources) {
  const key = `${resource.apiVersion}/${resource.kind}`;
  const name = `${resource.kind}/${resource.metadata?.name}`;
  const file = models[key];
  if (!file) {
    console.log(`SKIP ${name}: no schema package for ${resource.apiVersion}`);
    continue;
  }
  const module = await import(pathToFileURL(path.join(modules, file)).href);
  const Model = module[resource.kind];
  try {
    new Model(resource).validate();
    console.log(`PASS ${name} (${resource.apiVersion})`);
  } catch (err) {
    failed += 1;
    console.log(`FAIL ${name} (${resource.apiVersion}): ${err.message}`);
  }
}
process.exit(failed ? 1 : 0);
