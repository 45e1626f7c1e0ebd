"""Static checks of deploy/ and the Dockerfile that need no container engine
and no cluster; run by deploy/check.sh after the schema validators.

    python3 deploy/tools/check_deploy.py RENDERED_BASE.yaml RENDERED_OVERLAY.yaml

Each check prints one line; any failure makes the exit status 1.
"""

import base64
import json
import pathlib
import re
import shlex
import sys
import tomllib
import urllib.parse

import yaml
from dockerfile_parse import DockerfileParser

from check_operators import operators
from checklib import DEPLOY, ROLE_ARN, ROOT, check, env_file, failures, load_all

KIB = 1024
MIB = 1024 * KIB


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (`256Mi`, `1G`, `1048576`) in bytes."""
    units = {"Ki": KIB, "Mi": MIB, "Gi": 1024 * MIB, "K": 1000, "M": 1000**2, "G": 1000**3}
    for suffix, factor in units.items():
        if quantity.endswith(suffix) and quantity[: -len(suffix)].isdigit():
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


# ---------------------------------------------------------------------------
# Kubernetes: what the schemas cannot say.
# ---------------------------------------------------------------------------


def kubernetes(rendered: pathlib.Path) -> None:
    print(f"kubernetes policy ({rendered.name})")
    docs = load_all(rendered)
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    # The settings as rendered (an overlay or component may merge into the
    # base's), else the base's files.
    config = ROOT / "deploy/k8s/base/config"
    shared = rendered_config(by_kind, "corral-shared") or env_file(config / "shared.env")
    ingress_env = rendered_config(by_kind, "corral-ingress") or env_file(config / "ingress.env")
    worker_env = rendered_config(by_kind, "corral-worker") or env_file(config / "worker.env")
    buffer = shared.get("CORRAL_BUFFER", "rabbitmq")
    print(f"  note  CORRAL_BUFFER={buffer}")

    readme_defaults = dict(re.findall(r"^\| `(CORRAL_\w+)` \| `([^`]*)` \|", (ROOT / "README.md").read_text(), re.M))
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    check(set(deployments) == {"corral-ingress", "corral-worker"}, "two Deployments", str(sorted(deployments)))
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        check(
            psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
            f"{name}: pod runs as non-root with the RuntimeDefault seccomp profile",
        )
        check(pod.get("automountServiceAccountToken") is False, f"{name}: no service account token mounted")
        for container in pod.get("initContainers", []) + pod["containers"]:
            cname = f"{name}/{container['name']}"
            sc = container.get("securityContext", {})
            check(
                sc.get("readOnlyRootFilesystem") is True
                and sc.get("allowPrivilegeEscalation") is False
                and sc.get("capabilities", {}).get("drop") == ["ALL"],
                f"{cname}: read-only root, no privilege escalation, all capabilities dropped",
            )
            resources = container.get("resources", {})
            check(
                {"cpu", "memory"} <= set(resources.get("requests", {}))
                and "memory" in resources.get("limits", {}),
                f"{cname}: cpu and memory requests, memory limit",
                json.dumps(resources),
            )
        main = pod["containers"][0]
        check(
            main.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz"
            and main.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
            f"{name}: liveness /healthz, readiness /readyz",
        )
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if name == "corral-ingress":
            drain_ms = sum(int(ingress_env[k]) for k in ("CORRAL_DRAIN_DELAY_MS", "CORRAL_SHUTDOWN_TIMEOUT_MS", "CORRAL_PUBLISH_TIMEOUT_MS"))
            check(
                int(ingress_env["CORRAL_DRAIN_DELAY_MS"]) > 0,
                "corral-ingress: CORRAL_DRAIN_DELAY_MS set, so endpoints drop the pod before it stops serving",
            )
            check(main["command"] == ["/usr/local/bin/corral-ingress"], "corral-ingress runs corral-ingress")
        else:
            drain_ms = int(worker_env["CORRAL_SHUTDOWN_TIMEOUT_MS"])
            init = [c.get("command") for c in pod.get("initContainers", [])]
            check(["/usr/local/bin/corral-worker", "migrate"] in init, "corral-worker: migrations run first (`corral-worker migrate`)")
            check(main["command"] == ["/usr/local/bin/corral-worker", "run"], "corral-worker runs `corral-worker run`")
        check(
            grace * 1000 > drain_ms,
            f"{name}: terminationGracePeriodSeconds ({grace}s) outlasts the drain timeouts ({drain_ms} ms)",
        )

    # The ingress's memory limit must hold its documented worst case
    # (docs/operations/deploy.md#memory): every allowed connection holding a body
    # in actix's buffers, plus the body budget twice (handler and AMQP
    # frames), plus the process itself.
    def setting(key: str) -> int:
        value = ingress_env.get(key, shared.get(key, readme_defaults.get(key)))
        return int(value)

    ingress_main = deployments["corral-ingress"]["spec"]["template"]["spec"]["containers"][0]
    limit = quantity_bytes(ingress_main["resources"]["limits"]["memory"])
    worst = (
        15 * MIB
        + setting("CORRAL_MAX_CONNECTIONS") * (setting("CORRAL_MAX_BODY_BYTES") + 32 * KIB)
        + 2 * setting("CORRAL_MAX_IN_FLIGHT_BYTES")
    )
    check(
        limit >= worst,
        f"corral-ingress: memory limit ({limit // MIB} MiB) holds the documented worst case ({worst // MIB} MiB)",
    )

    # The sizing and KEDA's target in the manifests come from benchmarks run
    # with the documented defaults of these settings; keep them the same.
    for key in ("CORRAL_PREFETCH", "CORRAL_BATCH_MAX", "CORRAL_BATCH_LINGER_MS", "CORRAL_DB_POOL_SIZE"):
        check(
            worker_env.get(key) == readme_defaults.get(key),
            f"worker.env: {key}={worker_env.get(key)} is the documented, benchmarked default (README: {readme_defaults.get(key)})",
        )
    check(len(by_kind.get("HorizontalPodAutoscaler", [])) == 1, "ingress HorizontalPodAutoscaler")
    # An autoscaler owns its target's replica count; `replicas` in the
    # manifest would reset a scaled-out Deployment on every `kubectl apply`.
    autoscaled = {
        a["spec"]["scaleTargetRef"]["name"]
        for a in by_kind.get("HorizontalPodAutoscaler", []) + by_kind.get("ScaledObject", [])
        if a["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    }
    for name in sorted(autoscaled):
        check(
            "replicas" not in deployments.get(name, {}).get("spec", {}),
            f"{name}: no spec.replicas (an autoscaler scales it)",
        )

    pdb_docs = by_kind.get("PodDisruptionBudget", [])
    pdbs = {p["spec"]["selector"].get("matchLabels", {}).get("app.kubernetes.io/name") for p in pdb_docs}
    rabbit_names = {r["metadata"]["name"] for r in by_kind.get("RabbitmqCluster", [])}
    check(
        pdbs == {"corral-ingress", "corral-worker"} | rabbit_names,
        "a PodDisruptionBudget for each Deployment and for the RabbitmqCluster's pods",
        str(sorted(map(str, pdbs))),
    )
    for pdb in pdb_docs:
        # Unready pods (an outage, a broken rollout) must not block node drains.
        check(
            pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
            f"PodDisruptionBudget {pdb['metadata']['name']}: unhealthyPodEvictionPolicy AlwaysAllow",
        )
    scaled = by_kind.get("ScaledObject", [])
    check(len(scaled) == 1, "worker ScaledObject")
    for so in scaled:
        triggers = so["spec"]["triggers"]
        if buffer == "sqs":
            check(len(triggers) == 1, "KEDA scales the worker on one trigger")
            sqs_trigger(by_kind, triggers[0], shared)
        else:
            # One trigger per shard queue (CORRAL_AMQP_QUEUES), named as
            # Topology::shard_queue names them.
            main = f"{shared['CORRAL_AMQP_PREFIX']}.delivery-status"
            shards = int(shared.get("CORRAL_AMQP_QUEUES", "1"))
            queues = [main] + [f"{main}.{k}" for k in range(1, shards)]
            check(
                [t["type"] for t in triggers] == ["rabbitmq"] * shards
                and [t["metadata"].get("queueName") for t in triggers] == queues,
                f"KEDA scales the worker on {queues} (CORRAL_AMQP_PREFIX, CORRAL_AMQP_QUEUES)",
                json.dumps([t["metadata"] for t in triggers]),
            )
        check(so["spec"]["scaleTargetRef"]["name"] == "corral-worker", "KEDA targets corral-worker")

    rabbit = by_kind.get("RabbitmqCluster", [])
    if buffer == "sqs":
        sqs(docs, by_kind, deployments, shared, ingress_env)
    else:
        check(len(rabbit) == 1 and rabbit[0]["spec"].get("replicas") == 3, "a 3-node RabbitmqCluster")
    for cluster in rabbit:
        spec = cluster["spec"]
        check(
            set(spec) <= {"replicas", "image", "resources", "persistence", "rabbitmq", "affinity", "service", "override",
                          "tls", "tolerations", "terminationGracePeriodSeconds", "skipPostDeploySteps",
                          "delayStartSeconds", "secretBackend", "imagePullSecrets"},
            "RabbitmqCluster: only known spec fields (no schema package; checked here)",
            str(sorted(spec)),
        )
    pg = by_kind.get("Cluster", [])
    check(len(pg) == 1 and pg[0]["spec"].get("instances") == 3, "a 3-instance CloudNativePG Cluster")
    for cluster in pg:
        database = cluster["spec"].get("bootstrap", {}).get("initdb", {}).get("database")
        check(database == "corral", "CloudNativePG bootstraps the `corral` database")
        # minSyncReplicas/maxSyncReplicas (and dataDurability: preferred)
        # turn synchronous replication off when no standby is ready, so an
        # acknowledged batch could exist on the primary alone.
        spec = cluster["spec"]
        sync = spec.get("postgresql", {}).get("synchronous", {})
        check(
            sync.get("dataDurability") == "required" and int(sync.get("number", 0)) >= 1,
            "CloudNativePG: synchronous replication required (postgresql.synchronous.dataDurability: required, number >= 1)",
            json.dumps(sync),
        )
        check(
            not {"minSyncReplicas", "maxSyncReplicas"} & set(spec),
            "CloudNativePG: no deprecated minSyncReplicas/maxSyncReplicas",
        )

    backups(by_kind)

    # Each binary's Secret holds what that binary needs and nothing more.
    # With SQS neither holds a broker URL: each pod's IAM role reaches the queue.
    broker_url = set() if buffer == "sqs" else {"CORRAL_AMQP_URL"}
    expected_keys = {
        "corral-ingress-secrets": {"CORRAL_WEBHOOK_TOKENS", "CORRAL_DROPCOWBOY_SIGNING_SECRETS", "CORRAL_SPOOL_DATABASE_URL"} | broker_url,
        "corral-worker-secrets": {"CORRAL_DATABASE_URL"} | broker_url,
    }
    for secret in by_kind.get("Secret", []):
        for base_name, expected in expected_keys.items():
            if generated_from(secret["metadata"]["name"], base_name):
                keys = secret_keys(secret)
                check(keys == expected, f"Secret {base_name} holds {sorted(expected)}, nothing else", str(sorted(keys)))
    configmaps = [c for c in by_kind.get("ConfigMap", []) if c["metadata"]["name"].startswith("corral-") and "data" in c]
    for cm in configmaps:
        for key in cm["data"]:
            check(
                key not in {"CORRAL_WEBHOOK_TOKENS", "CORRAL_DROPCOWBOY_SIGNING_SECRETS", "CORRAL_AMQP_URL", "CORRAL_DATABASE_URL", "CORRAL_SPOOL_DATABASE_URL"},
                f"ConfigMap {cm['metadata']['name']}: no secret in it ({key})",
            )

    spool(by_kind, deployments, ingress_env)
    worker_signing_secrets(by_kind, deployments)


SIGNING_SECRETS = ("CORRAL_DROPCOWBOY_SIGNING_SECRETS", "CORRAL_DROPCOWBOY_SIGNING_SECRETS_FILE")


def worker_signing_secrets(by_kind: dict[str, list[dict]], deployments: dict[str, dict]) -> None:
    """The signing secrets of Drop Cowboy's webhooks are ingress's alone:
    nothing of the worker's pod (its env, the ConfigMaps and Secrets it reads,
    its migration) may carry them."""
    worker = deployments.get("corral-worker")
    if not worker:
        return
    pod = worker["spec"]["template"]["spec"]
    sources = {(kind, d["metadata"]["name"]): set(d.get("data") or {}) | set(d.get("stringData") or {})
               for kind in ("ConfigMap", "Secret") for d in by_kind.get(kind, [])}
    found = []
    for container in pod.get("initContainers", []) + pod["containers"]:
        names = {v["name"] for v in container.get("env", [])}
        for source in container.get("envFrom", []):
            for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if ref in source:
                    names |= sources.get((kind, source[ref]["name"]), set())
        found += [f"{container['name']}: {n}" for n in sorted(names) if n in SIGNING_SECRETS]
    check(not found, "corral-worker: no Drop Cowboy signing secret in any of its containers' environment", str(found))


def rendered_config(by_kind: dict[str, list[dict]], name: str) -> dict[str, str]:
    """The data of the rendered ConfigMap generated as `name` ({} if none)."""
    for cm in by_kind.get("ConfigMap", []):
        if generated_from(cm["metadata"]["name"], name):
            return dict(cm.get("data") or {})
    return {}


def generated_from(name: str, base: str) -> bool:
    """`name` is `base`, or `base` with kustomize's generated hash suffix."""
    return name == base or re.fullmatch(re.escape(base) + r"-[a-z0-9]{10}", name) is not None


def secret_keys(secret: dict) -> set[str]:
    return set(secret.get("data", {}) or {}) | set(secret.get("stringData", {}) or {})


def secret_value(secret: dict, key: str) -> str | None:
    if key in (secret.get("stringData") or {}):
        return secret["stringData"][key]
    encoded = (secret.get("data") or {}).get(key)
    return base64.b64decode(encoded).decode() if encoded is not None else None


def env_secrets(pod: dict) -> set[str]:
    """The Secrets any container of a pod takes environment variables from."""
    names = set()
    for container in pod.get("initContainers", []) + pod["containers"]:
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                names.add(source["secretRef"]["name"])
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
    return names


def admits(policy: dict, pod_labels: dict[str, str], port: int | str) -> bool:
    """Whether an ingress rule of a NetworkPolicy admits pods of the policy's
    own namespace with these labels on this port (a rule without `ports`
    admits every port)."""
    for rule in policy["spec"].get("ingress", []):
        ports = rule.get("ports")
        if ports is not None and not any(p.get("port") == port for p in ports):
            continue
        for peer in rule.get("from", []):
            if "namespaceSelector" in peer or "ipBlock" in peer:
                continue
            wanted = peer.get("podSelector", {}).get("matchLabels", {})
            if wanted.items() <= pod_labels.items():
                return True
    return False


def egress_policies(by_kind: dict[str, list[dict]], pod_labels: dict[str, str]) -> list[dict]:
    """The NetworkPolicies restricting the egress of pods with these labels."""
    return [
        p for p in by_kind.get("NetworkPolicy", [])
        if "Egress" in p["spec"].get("policyTypes", [])
        and p["spec"]["podSelector"].get("matchLabels", {}).items() <= pod_labels.items()
    ]


def egress_admits(policy: dict, port: int, protocol: str = "TCP", pod_labels: dict[str, str] | None = None,
                  anywhere: bool = False) -> bool:
    """Whether an egress rule lets a pod connect to `port`: to pods of its own
    namespace with `pod_labels`, to any pod of a namespace (`pod_labels` and
    a namespaceSelector), or, with `anywhere`, to an ipBlock of 0.0.0.0/0."""
    for rule in policy["spec"].get("egress", []):
        ports = rule.get("ports")
        if ports is not None and not any(
            p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports
        ):
            continue
        peers = rule.get("to")
        if not peers:
            return True
        for peer in peers:
            if anywhere:
                if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0":
                    return True
                continue
            if pod_labels is None or "ipBlock" in peer:
                continue
            wanted = peer.get("podSelector", {}).get("matchLabels", {})
            if wanted.items() <= pod_labels.items():
                return True
    return False


def spool(by_kind: dict[str, list[dict]], deployments: dict[str, dict], ingress_env: dict[str, str]) -> None:
    """Ingress writes the PostgreSQL spool as its own role, which may only
    INSERT into spooled_webhooks: it must never be given the worker's
    database user, which owns every table."""
    ingress = deployments.get("corral-ingress")
    worker = deployments.get("corral-worker")
    if not ingress or not worker:
        return
    ingress_pod, worker_pod = ingress["spec"]["template"]["spec"], worker["spec"]["template"]["spec"]
    ingress_secrets, worker_secrets = env_secrets(ingress_pod), env_secrets(worker_pod)
    check(
        bool(ingress_secrets) and not ingress_secrets & worker_secrets,
        "corral-ingress: its env Secrets are its own, none of the worker's",
        f"ingress {sorted(ingress_secrets)}, worker {sorted(worker_secrets)}",
    )
    secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}
    # CloudNativePG's own Secrets (corral-db-app, -superuser) are never an
    # env source of ingress either.
    check(
        not any(name.startswith("corral-db") for name in ingress_secrets),
        "corral-ingress: no CloudNativePG user Secret in its env",
        str(sorted(ingress_secrets)),
    )
    ingress_keys = {v["name"] for c in ingress_pod["containers"] for v in c.get("env", [])}
    missing = sorted(ingress_secrets - set(secrets))
    for name in ingress_secrets & set(secrets):
        ingress_keys |= secret_keys(secrets[name])
        check(
            "CORRAL_DATABASE_URL" not in secret_keys(secrets[name]),
            f"corral-ingress: its Secret {name} holds no CORRAL_DATABASE_URL",
        )
    if missing:
        print(f"  note  Secrets {missing} come from an overlay: CORRAL_SPOOL_DATABASE_URL checked there")
    else:
        check("CORRAL_SPOOL_DATABASE_URL" in ingress_keys, "corral-ingress has CORRAL_SPOOL_DATABASE_URL", str(sorted(ingress_keys)))

    # The spool's TLS: the CA file the setting names is mounted.
    ca_file = ingress_env.get("CORRAL_SPOOL_DATABASE_CA_FILE", "")
    mounts = {m["mountPath"].rstrip("/") for m in ingress_pod["containers"][0].get("volumeMounts", [])}
    check(
        bool(ca_file) and str(pathlib.PurePosixPath(ca_file).parent) in mounts,
        f"corral-ingress: CORRAL_SPOOL_DATABASE_CA_FILE ({ca_file}) is on a mounted volume",
        str(sorted(mounts)),
    )
    check("CORRAL_SPOOL_AFTER_MS" in ingress_env, "ingress.env: CORRAL_SPOOL_AFTER_MS set")

    # The roles, declared as CloudNativePG managed roles.
    for cluster in by_kind.get("Cluster", []):
        roles = {r["name"]: r for r in cluster["spec"].get("managed", {}).get("roles", [])}
        writer, login = roles.get("corral_spool_writer", {}), roles.get("corral_ingress", {})
        check(
            writer.get("login") is False and writer.get("ensure", "present") == "present",
            "CloudNativePG: managed role corral_spool_writer, NOLOGIN",
            json.dumps(writer),
        )
        check(
            login.get("login") is True
            and "corral_spool_writer" in login.get("inRoles", [])
            and login.get("inherit", True) is True
            and not any(login.get(k) for k in ("superuser", "createdb", "createrole", "replication", "bypassrls"))
            and bool(login.get("passwordSecret", {}).get("name")),
            "CloudNativePG: managed role corral_ingress, LOGIN, member of corral_spool_writer, no other privilege, password from a Secret",
            json.dumps(login),
        )
        password = secrets.get(login.get("passwordSecret", {}).get("name", ""))
        if password is not None:
            username = secret_value(password, "username")
            check(
                password.get("type") == "kubernetes.io/basic-auth" and username == "corral_ingress",
                "the password Secret of corral_ingress is basic-auth with username corral_ingress",
                f"type {password.get('type')}, username {username!r}",
            )
        # The spool URL logs in as that role, on the read-write service, with TLS.
        for name in ingress_secrets & set(secrets):
            value = secret_value(secrets[name], "CORRAL_SPOOL_DATABASE_URL")
            if value:
                url = urllib.parse.urlsplit(value)
                query = urllib.parse.parse_qs(url.query)
                check(
                    url.username == "corral_ingress"
                    and (url.hostname or "").split(".")[0] == f"{cluster['metadata']['name']}-rw"
                    and query.get("sslmode") == ["require"],
                    "CORRAL_SPOOL_DATABASE_URL: role corral_ingress, the read-write service, sslmode=require",
                    f"user {url.username}, host {url.hostname}, query {url.query}",
                )

        # PostgreSQL accepts ingress and the worker on 5432, whatever
        # NetworkPolicies select its pods.
        db_labels = {"cnpg.io/cluster": cluster["metadata"]["name"]}
        policies = [
            p for p in by_kind.get("NetworkPolicy", [])
            if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
            and p["spec"]["podSelector"].get("matchLabels", {}).items() <= db_labels.items()
        ]
        for name, deployment in (("corral-ingress", ingress), ("corral-worker", worker)):
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            check(
                not policies or any(admits(p, labels, 5432) for p in policies),
                f"NetworkPolicy: PostgreSQL ({cluster['metadata']['name']}) accepts {name} pods on 5432",
                str([p["metadata"]["name"] for p in policies]),
            )
    # And no egress policy stops ingress (the spool) or the worker from
    # reaching it.
    for cluster in by_kind.get("Cluster", []):
        db_labels = {"cnpg.io/cluster": cluster["metadata"]["name"]}
        for name, deployment in (("corral-ingress", ingress), ("corral-worker", worker)):
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            egress = egress_policies(by_kind, labels)
            check(
                not egress or any(egress_admits(p, 5432, pod_labels=db_labels) for p in egress),
                f"NetworkPolicy: {name}'s egress reaches PostgreSQL ({cluster['metadata']['name']}) on 5432",
                str([p["metadata"]["name"] for p in egress]),
            )


# ---------------------------------------------------------------------------
# CORRAL_BUFFER=sqs (deploy/k8s/components/sqs, overlays/eks-sqs).
# ---------------------------------------------------------------------------

SQS_URL = re.compile(r"https://sqs\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?/\d{12}/[\w-]+")


def sqs_trigger(by_kind: dict[str, list[dict]], trigger: dict, shared: dict[str, str]) -> None:
    """KEDA scales the worker on the queue the binaries use, in its region,
    with an AWS pod identity, on visible messages only."""
    meta = trigger.get("metadata", {})
    check(trigger["type"] == "aws-sqs-queue", "KEDA scales the worker with the aws-sqs-queue scaler", trigger["type"])
    check(
        meta.get("queueURL") == shared.get("CORRAL_SQS_QUEUE_URL") and meta.get("awsRegion") == shared.get("AWS_REGION"),
        "KEDA reads the queue and region of CORRAL_SQS_QUEUE_URL and AWS_REGION",
        json.dumps(meta),
    )
    # A worker holds up to CORRAL_PREFETCH messages in flight: counted, they
    # would ask for more workers the more workers there are.
    check(meta.get("scaleOnInFlight") == "false", "KEDA scales on visible messages only (scaleOnInFlight: false)")
    check(str(meta.get("queueLength", "")).isdigit(), "KEDA has a queueLength target", str(meta.get("queueLength")))
    auth = {t["metadata"]["name"]: t for t in by_kind.get("TriggerAuthentication", [])}
    ref = trigger.get("authenticationRef", {}).get("name")
    identity = auth.get(ref, {}).get("spec", {}).get("podIdentity", {})
    check(
        identity.get("provider") == "aws" and bool(ROLE_ARN.fullmatch(identity.get("roleArn", ""))),
        "KEDA's TriggerAuthentication uses podIdentity provider aws (KEDA 2.13+) with a role ARN of its own",
        json.dumps(identity),
    )


def sqs(docs: list[dict], by_kind: dict[str, list[dict]], deployments: dict[str, dict],
        shared: dict[str, str], ingress_env: dict[str, str]) -> None:
    """Nothing of RabbitMQ, the queue named once, and one IAM role per binary."""
    rabbit = [
        f"{d['kind']}/{d['metadata']['name']}" for d in docs
        if d["kind"] == "RabbitmqCluster" or "rabbitmq" in d["metadata"]["name"]
    ]
    check(not rabbit, "CORRAL_BUFFER=sqs: no RabbitMQ objects", str(rabbit))
    amqp = sorted(
        key for d in docs if d["kind"] in ("ConfigMap", "Secret")
        for key in list(d.get("data") or {}) + list(d.get("stringData") or {})
        if key.startswith("CORRAL_AMQP_")
    )
    check(not amqp, "CORRAL_BUFFER=sqs: no CORRAL_AMQP_* setting or secret", str(amqp))
    url = shared.get("CORRAL_SQS_QUEUE_URL", "")
    match = SQS_URL.fullmatch(url)
    check(
        bool(match) and match.group(1) == shared.get("AWS_REGION"),
        "corral-shared: CORRAL_SQS_QUEUE_URL is an SQS queue URL in AWS_REGION",
        f"{url!r}, AWS_REGION {shared.get('AWS_REGION')!r}",
    )
    limit = int(ingress_env.get("CORRAL_SQS_MAX_MESSAGE_BYTES", 262144))
    template_size = cfn_template()["Parameters"]["MaximumMessageSize"]["Default"]
    check(
        limit <= template_size and limit >= int(ingress_env.get("CORRAL_MAX_BODY_BYTES", shared.get("CORRAL_MAX_BODY_BYTES", 65536))) + 1024,
        f"CORRAL_SQS_MAX_MESSAGE_BYTES ({limit}) holds a whole body and fits the queue's MaximumMessageSize ({template_size})",
    )

    accounts = {a["metadata"]["name"]: a for a in by_kind.get("ServiceAccount", [])}
    roles = {}
    for name in ("corral-ingress", "corral-worker"):
        pod = deployments[name]["spec"]["template"]["spec"]
        account = pod.get("serviceAccountName", "default")
        check(account == name, f"{name} runs as its own ServiceAccount {name}", account)
        for container in pod.get("initContainers", []) + pod["containers"]:
            keys = {v["name"] for v in container.get("env", [])}
            check(
                not keys & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
                f"{name}/{container['name']}: no AWS access key in its environment (its role reaches SQS)",
            )
    for name in ("corral-ingress", "corral-worker", "corral-operator"):
        role = accounts.get(name, {}).get("metadata", {}).get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
        roles[name] = role
        check(
            name in accounts and bool(ROLE_ARN.fullmatch(role)) and accounts[name].get("automountServiceAccountToken") is False,
            f"ServiceAccount {name}: an IAM role (eks.amazonaws.com/role-arn), no Kubernetes API token",
            role,
        )
    check(len(set(roles.values())) == len(roles), "ingress, the worker and the operator have three different IAM roles", str(roles))

    # Egress: DNS, PostgreSQL (checked with the spool) and HTTPS to SQS and
    # STS, never AMQP.
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        egress = egress_policies(by_kind, labels)
        check(bool(egress), f"NetworkPolicy: {name}'s egress is restricted")
        check(
            any(egress_admits(p, 53, "UDP", pod_labels={"k8s-app": "kube-dns"}) for p in egress),
            f"NetworkPolicy: {name} reaches the cluster DNS",
        )
        check(any(egress_admits(p, 443, anywhere=True) for p in egress), f"NetworkPolicy: {name} reaches HTTPS (SQS, STS)")
        check(
            not any(egress_admits(p, port, anywhere=True) for p in egress for port in (5671, 5672)),
            f"NetworkPolicy: {name} does not reach AMQP",
        )


# ---------------------------------------------------------------------------
# AWS: the CloudFormation template (linted by cfn-lint in deploy/check.sh),
# the plain policy documents, and the SQS calls in the code.
# ---------------------------------------------------------------------------

TEMPLATE = DEPLOY / "aws/corral-sqs.yaml"
# The IAM action each SQS SDK call is authorised as (batch calls as their
# single counterpart).
SQS_ACTIONS = {
    "send_message": "sqs:SendMessage",
    "send_message_batch": "sqs:SendMessage",
    "receive_message": "sqs:ReceiveMessage",
    "delete_message": "sqs:DeleteMessage",
    "delete_message_batch": "sqs:DeleteMessage",
    "change_message_visibility": "sqs:ChangeMessageVisibility",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
    "get_queue_attributes": "sqs:GetQueueAttributes",
    "get_queue_url": "sqs:GetQueueUrl",
    "list_dead_letter_source_queues": "sqs:ListDeadLetterSourceQueues",
    "list_queues": "sqs:ListQueues",
    "purge_queue": "sqs:PurgeQueue",
    "start_message_move_task": "sqs:StartMessageMoveTask",
    "list_message_move_tasks": "sqs:ListMessageMoveTasks",
    "cancel_message_move_task": "sqs:CancelMessageMoveTask",
    "create_queue": "sqs:CreateQueue",
    "delete_queue": "sqs:DeleteQueue",
    "set_queue_attributes": "sqs:SetQueueAttributes",
    "tag_queue": "sqs:TagQueue",
    "list_queue_tags": "sqs:ListQueueTags",
}
# Which role runs which code. The worker's subcommands (worker/src/ops/)
# run as the operator. A call in shared/ counts for each role whose code
# calls the shared function it is in.
ROLE_CODE = {
    "IngressRole": (["ingress/src"], []),
    "WorkerRole": (["worker/src"], ["worker/src/ops"]),
    "OperatorRole": (["worker/src/ops"], []),
}
SHARED_CODE = "shared"
POLICY_FILES = {
    "IngressRole": "ingress-policy.json",
    "WorkerRole": "worker-policy.json",
    "OperatorRole": "operator-policy.json",
    "KedaRole": "keda-policy.json",
    "BackupRole": "backup-policy.json",
}


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref, !Sub…) as their long forms."""


def _cfn_tag(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def cfn_template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


def sources(dirs: list[str], excluded: list[str] = []) -> dict[str, str]:
    """The Rust files of these trees, by path relative to the repository."""
    texts = {}
    for directory in dirs:
        for path in sorted((ROOT / directory).rglob("*.rs")):
            relative = str(path.relative_to(ROOT))
            if not any(relative.startswith(e + "/") for e in excluded):
                texts[relative] = path.read_text()
    return texts


def sqs_calls_in(text: str) -> list[tuple[int, str]]:
    """SDK calls (`.receive_message()`…) on an SQS client, with their offsets:
    the known ones, and any other whose builder names a queue next (an SQS
    call missing from SQS_ACTIONS)."""
    found = [(m.start(), m.group(1)) for m in re.finditer(r"\.([a-z_]+)\(\)", text) if m.group(1) in SQS_ACTIONS]
    found += [(m.start(), m.group(1)) for m in re.finditer(r"\.([a-z_]+)\(\)\s*\.queue_(?:url|name)\(", text)
              if m.group(1) not in SQS_ACTIONS]
    return found


def code_sqs_calls(dirs: list[str], excluded: list[str]) -> dict[str, set[str]]:
    """The SQS calls a role's code makes, each with where: in its own trees,
    and in the functions of shared/ that its trees call."""
    calls: dict[str, set[str]] = {}
    own = sources(dirs, excluded)
    for relative, text in own.items():
        for _, call in sqs_calls_in(text):
            calls.setdefault(call, set()).add(relative)
    for relative, text in sources([SHARED_CODE]).items():
        functions = [(m.start(), m.group(1)) for m in re.finditer(r"\bfn\s+([a-z_][a-z0-9_]*)", text)]
        for offset, call in sqs_calls_in(text):
            enclosing = [name for start, name in functions if start < offset]
            if not enclosing:
                continue
            function = enclosing[-1]
            # `sqs::function(`, or `function(` where a `use …sqs…` brings it in.
            qualified = re.compile(r"\bsqs::" + re.escape(function) + r"\s*\(")
            called = re.compile(r"(?<!fn )\b" + re.escape(function) + r"\s*\(")
            imported = re.compile(r"\buse\s[^;]*\bsqs\b[^;]*\b" + re.escape(function) + r"\b[^;]*;")
            if any(qualified.search(t) or (imported.search(t) and called.search(t)) for t in own.values()):
                calls.setdefault(call, set()).add(f"{relative} ({function})")
    return calls


def statement_key(statement: dict, resource_kind) -> tuple:
    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
    return (statement.get("Sid"), tuple(sorted(actions)), resource_kind(statement["Resource"]))


def aws() -> None:
    print("AWS: corral-sqs.yaml, deploy/aws/iam, the SQS calls in the code")
    template = cfn_template()
    resources = template["Resources"]
    queues = {name: r for name, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
    check(set(queues) == {"Queue", "DeadLetterQueue"}, "a queue and a dead-letter queue", str(sorted(queues)))
    for name, queue in queues.items():
        props = queue["Properties"]
        check(props.get("MessageRetentionPeriod") == 1209600, f"{name}: 14 days' retention (SQS's longest)")
        check(
            props.get("SqsManagedSseEnabled") is not None and props.get("KmsMasterKeyId") is not None,
            f"{name}: encrypted at rest, with SQS's keys or the KMS key given",
        )
        check(
            queue.get("DeletionPolicy") == "Retain" and queue.get("UpdateReplacePolicy") == "Retain",
            f"{name}: kept when the stack is deleted or the queue replaced (it holds webhooks)",
        )
    redrive = queues.get("Queue", {}).get("Properties", {}).get("RedrivePolicy", {})
    check(
        redrive.get("deadLetterTargetArn") == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]} and "maxReceiveCount" in redrive,
        "Queue: a redrive policy to the dead-letter queue with a maxReceiveCount",
        json.dumps(redrive),
    )

    def s3_kind(text: str) -> str:
        return "objects" if "/" in text.split(":s3:::", 1)[1] else "bucket"

    def template_kind(resource) -> str:
        text = json.dumps(resource)
        if ":s3:::" in text:
            return s3_kind(text)
        return "dead_letter" if "DeadLetterQueue" in text else "kms" if "KmsKeyArn" in text else "queue"

    def file_kind(resource: str) -> str:
        if ":s3:::" in resource:
            return s3_kind(resource)
        return "dead_letter" if resource.endswith("-dead-letter") else "kms" if ":kms:" in resource else "queue"

    subjects = {"IngressRole": "corral-ingress", "WorkerRole": "corral-worker", "OperatorRole": "corral-operator",
                "BackupRole": "<PostgresCluster>"}
    for role, file in POLICY_FILES.items():
        check(role in resources, f"deploy/aws/corral-sqs.yaml: the role {role}")
        if role not in resources:
            continue
        props = resources[role]["Properties"]
        statements = []
        for policy in props["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                if "Fn::If" in statement:
                    condition, then, _ = statement["Fn::If"]
                    check(condition == "UseKmsKey", f"{role}: only the KMS statement is conditional", condition)
                    statement = then
                statements.append(statement)
        granted = {statement_key(s, template_kind) for s in statements}
        check(all(s["Effect"] == "Allow" for s in statements), f"{role}: Allow statements only")
        check(
            not any("*" in json.dumps(s["Action"]) or s["Resource"] == "*" for s in statements),
            f"{role}: no wildcard action or resource",
        )
        document = json.loads((DEPLOY / "aws/iam" / file).read_text())
        in_file = {statement_key(s, file_kind) for s in document["Statement"]}
        check(granted == in_file, f"deploy/aws/iam/{file} grants what {role} grants", str(sorted(granted ^ in_file)))

        # The trust: one ServiceAccount's web identity through the cluster's
        # OIDC provider, for STS only.
        trust = props["AssumeRolePolicyDocument"]
        variants = trust["Fn::If"][1:] if "Fn::If" in trust else [trust]
        for variant in variants:
            text = re.sub(r"\$\{([^}]+)\}", lambda m: f"<{m.group(1)}>", variant["Fn::Sub"])
            first = json.loads(text)["Statement"][0]
            conditions = first.get("Condition", {}).get("StringEquals", {})
            expected = subjects.get(role, "<KedaServiceAccount>")
            check(
                first["Action"] == "sts:AssumeRoleWithWebIdentity"
                and "oidc-provider/<OidcProvider>" in first["Principal"].get("Federated", "")
                and conditions.get("<OidcProvider>:aud") == "sts.amazonaws.com"
                and conditions.get("<OidcProvider>:sub", "").endswith(f":{expected}"),
                f"{role}: trusted by the ServiceAccount {expected} only (IRSA, audience sts.amazonaws.com)",
                json.dumps(first),
            )
        if role == "KedaRole":
            # Under EKS Pod Identity KEDA has no web identity token and falls
            # back to sts:AssumeRole with its own role's credentials.
            check(
                any('"sts:AssumeRole"' in v["Fn::Sub"] and "${KedaPrincipalArn}" in v["Fn::Sub"] for v in variants),
                "KedaRole: with KedaPrincipalArn, KEDA's own role may assume it (EKS Pod Identity: no web identity, KEDA falls back to sts:AssumeRole)",
            )

        # What the code calls, the role may do.
        if role in ROLE_CODE:
            dirs, excluded = ROLE_CODE[role]
            actions = {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
            for call, files in sorted(code_sqs_calls(dirs, excluded).items()):
                action = SQS_ACTIONS.get(call)
                check(
                    action is not None and action in actions,
                    f"{role}: may {action or call} ({call} in {', '.join(sorted(files))})",
                    "add the action to the role, deploy/aws/iam and SQS_ACTIONS" if action else "unknown SQS call: map it in SQS_ACTIONS",
                )
    for file in ("trust-irsa.json", "trust-pod-identity.json"):
        json.loads((DEPLOY / "aws/iam" / file).read_text())
        check(True, f"deploy/aws/iam/{file} parses")


BARMAN_CLOUD = "barman-cloud.cloudnative-pg.io"


def backups(by_kind: dict[str, list[dict]]) -> None:
    """Once the worker acks, PostgreSQL holds the only copy of a webhook: the
    Cluster must archive its WAL to an object store that exists here, and base
    backups must be scheduled through the same plugin."""
    stores = {o["metadata"]["name"]: o for o in by_kind.get("ObjectStore", [])
              if o["apiVersion"].startswith("barmancloud.cnpg.io/")}
    for cluster in by_kind.get("Cluster", []):
        name = cluster["metadata"]["name"]
        archivers = [p for p in cluster["spec"].get("plugins", []) if p.get("isWALArchiver") is True]
        target = archivers[0].get("parameters", {}).get("barmanObjectName") if len(archivers) == 1 else None
        check(
            len(archivers) == 1 and archivers[0].get("name") == BARMAN_CLOUD and target in stores,
            f"backups configured: {name} archives its WAL with the Barman Cloud plugin to an ObjectStore defined here",
            f"WAL archivers {json.dumps(archivers)}; ObjectStores {sorted(stores)}",
        )
        check(
            "barmanObjectStore" not in cluster["spec"].get("backup", {}),
            f"{name}: no deprecated in-tree spec.backup.barmanObjectStore (the plugin replaces it)",
        )
        scheduled = [
            b for b in by_kind.get("ScheduledBackup", [])
            if b["spec"].get("cluster", {}).get("name") == name
            and b["spec"].get("method") == "plugin"
            and b["spec"].get("pluginConfiguration", {}).get("name") == BARMAN_CLOUD
        ]
        check(
            bool(scheduled),
            f"backups configured: a ScheduledBackup of {name} with method plugin ({BARMAN_CLOUD})",
            str([b["metadata"]["name"] for b in by_kind.get("ScheduledBackup", [])]),
        )
        for backup in scheduled:
            # CloudNativePG's cron has six fields, seconds first; a five-field
            # line would be read with the minutes as seconds.
            fields = str(backup["spec"].get("schedule", "")).split()
            check(len(fields) == 6, f"ScheduledBackup {backup['metadata']['name']}: six-field schedule", str(fields))
        if target in stores:
            store = stores[target]["spec"]
            config = store.get("configuration", {})
            check(
                str(config.get("destinationPath", "")).startswith(("s3://", "gs://", "https://"))
                and config.get("wal", {}).get("compression")
                and bool(store.get("retentionPolicy")),
                f"ObjectStore {target}: a destination, compressed WAL, a retention policy",
                json.dumps({k: config.get(k) for k in ("destinationPath", "wal")} | {"retentionPolicy": store.get("retentionPolicy")}),
            )
            credentials = {v.get("name") for v in config.get("s3Credentials", {}).values() if isinstance(v, dict)}
            secrets = {s["metadata"]["name"] for s in by_kind.get("Secret", [])}
            if secrets:
                check(
                    credentials <= secrets,
                    f"ObjectStore {target}: its credentials Secret is in the overlay",
                    f"{sorted(map(str, credentials))} not in {sorted(secrets)}",
                )


# ---------------------------------------------------------------------------
# PostgreSQL monitoring: CloudNativePG's metrics reach the Prometheus that
# scrapes corral.
# ---------------------------------------------------------------------------


def postgres_monitoring(rendered: pathlib.Path) -> None:
    print(f"PostgreSQL monitoring ({rendered.name})")
    docs = load_all(rendered)
    monitors = [d for d in docs if d["kind"] in ("PodMonitor", "ServiceMonitor")]
    # The labels every one of corral's own monitors carries (the base's
    # part-of, an overlay's `release`...) are the ones a Prometheus selecting
    # monitors by label may rely on; a monitor without them goes unscraped.
    own = [m for m in monitors if m["metadata"]["name"] in ("corral-ingress", "corral-worker")]
    shared = set.intersection(*(set(m["metadata"].get("labels", {}).items()) for m in own)) if own else set()
    shared = {(k, v) for k, v in shared if k != "app.kubernetes.io/name"}
    for cluster in (d for d in docs if d["kind"] == "Cluster" and d["apiVersion"].startswith("postgresql.cnpg.io/")):
        name = cluster["metadata"]["name"]
        # Deprecated, and its generated PodMonitor has none of the overlay's labels.
        check(
            "enablePodMonitor" not in cluster["spec"].get("monitoring", {}),
            f"CloudNativePG {name}: no deprecated monitoring.enablePodMonitor",
        )
        scraping = [
            m
            for m in monitors
            if m["spec"].get("selector", {}).get("matchLabels", {}).get("cnpg.io/cluster") == name
            and m["metadata"].get("namespace") == cluster["metadata"].get("namespace")
            and any(
                e.get("port") == "metrics"
                for e in m["spec"].get("podMetricsEndpoints", []) + m["spec"].get("endpoints", [])
            )
        ]
        check(
            bool(scraping),
            f"CloudNativePG {name}: a PodMonitor or ServiceMonitor selects its pods (cnpg.io/cluster) on port `metrics`",
        )
        for m in scraping:
            labels = set(m["metadata"].get("labels", {}).items())
            check(
                shared <= labels,
                f"{m['kind']} {m['metadata']['name']}: carries the labels corral's own monitors carry {sorted(shared)}",
                str(sorted(shared - labels)),
            )


# ---------------------------------------------------------------------------
# Alerts: a runbook for each.
# ---------------------------------------------------------------------------


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def runbooks() -> None:
    print("alerts and runbooks")
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yaml").read_text())
    # The runbooks are the pages docs/operations/runbooks*.md; each URL names
    # its page and a heading on it.
    pages = sorted((ROOT / "docs/operations").glob("runbooks*.md"))
    anchors = {
        f"docs/operations/{page.name}": {
            anchor(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")
        }
        for page in pages
    }
    check(bool(pages), "docs/operations/runbooks*.md exist")
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            name = rule["alert"]
            url = rule.get("annotations", {}).get("runbook_url", "")
            fragment = urllib.parse.urlparse(url).fragment
            page = next((page for page in anchors if url.split("#")[0].endswith(page)), None)
            check(
                page is not None and fragment in anchors[page],
                f"{name}: runbook_url points at a heading of docs/operations/runbooks*.md",
                url,
            )
            check(rule.get("labels", {}).get("severity") in {"warning", "critical"}, f"{name}: severity warning or critical")


# ---------------------------------------------------------------------------
# Compose: parses (schema checked by check-jsonschema) and references only
# services and files that exist.
# ---------------------------------------------------------------------------


def compose() -> None:
    print("compose")
    directory = DEPLOY / "compose"
    spec = yaml.safe_load((directory / "compose.yaml").read_text())
    services = spec["services"]
    volumes = set(spec.get("volumes", {}) or {})
    for name, service in services.items():
        depends = service.get("depends_on", [])
        names = depends if isinstance(depends, list) else list(depends)
        for dep in names:
            check(dep in services, f"{name}: depends_on {dep} is a service")
        build = service.get("build")
        if build:
            context = (directory / build["context"]).resolve()
            check(context.is_dir(), f"{name}: build context {build['context']} exists")
            check((context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: {build.get('dockerfile', 'Dockerfile')} exists")
        for mount in service.get("volumes", []):
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source")
            if source.startswith((".", "/")):
                check((directory / source).resolve().exists(), f"{name}: mounted {source} exists")
            else:
                check(source in volumes, f"{name}: named volume {source} is declared")
    check(services.get("ingress", {}).get("deploy", {}).get("replicas") == 2, "two ingress replicas")
    for name in ("worker", "migrate"):
        environment = services.get(name, {}).get("environment", {})
        check(
            not set(environment) & set(SIGNING_SECRETS),
            f"{name}: no Drop Cowboy signing secret in its environment (ingress's alone)",
        )
    for needed in ("rabbitmq", "postgres", "ingress", "worker", "prometheus", "grafana"):
        check(needed in services, f"service {needed}")

    prometheus = yaml.safe_load((directory / "prometheus.yml").read_text())
    for job in prometheus["scrape_configs"]:
        hosts = [t.split(":")[0] for sc in job.get("static_configs", []) for t in sc["targets"]]
        hosts += [n for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
        for host in hosts:
            check(host in services, f"prometheus job {job['job_name']}: scrapes service {host}")
    scraped = {job["job_name"] for job in prometheus["scrape_configs"]}
    check({"corral-ingress", "corral-worker", "rabbitmq", "rabbitmq-queues"} <= scraped, "Prometheus scrapes both binaries and RabbitMQ")
    nginx = (directory / "nginx.conf").read_text()
    for host in re.findall(r"^\s*server\s+([\w.-]+):\d+", nginx, re.M):
        check(host in services, f"nginx upstream {host} is a service")
    postgres_owner = services.get("postgres", {}).get("environment", {}).get("POSTGRES_USER")
    for ds in grafana_datasources():
        # PostgreSQL's is host:port, without a scheme.
        url = ds["url"] if "://" in ds["url"] else f"//{ds['url']}"
        host = urllib.parse.urlparse(url).hostname
        check(host in services, f"Grafana datasource {ds['name']} points at service {host}")
        if ds["type"] == "grafana-postgresql-datasource":
            # Grafana runs whatever SQL a dashboard editor types.
            check(
                ds.get("user") not in (None, postgres_owner),
                f"Grafana datasource {ds['name']} logs in as a read-only role, not the owner {postgres_owner}",
                str(ds.get("user")),
            )
    grafana_mounts = " ".join(m if isinstance(m, str) else m.get("source", "") for m in services.get("grafana", {}).get("volumes", []))
    for path in sorted((DEPLOY / "grafana").glob("*.json")):
        check(f"../grafana/{path.name}:" in grafana_mounts, f"grafana: mounts the dashboard {path.name}")
    plugins = (directory / "rabbitmq/enabled_plugins").read_text()
    check("rabbitmq_management" in plugins and "rabbitmq_prometheus" in plugins, "RabbitMQ management and Prometheus plugins enabled")


# What each dashboard must show: metric names in its PromQL, table names in
# its SQL.
DASHBOARD_METRICS = {
    "corral.json": (
        "corral_ingress_requests_total", "corral_ingress_rejected_total", "corral_ingress_publish_failures_total",
        "rabbitmq_detailed_queue_messages_ready", "corral_worker_messages_total", "corral_worker_batch_size",
        "corral_worker_end_to_end_seconds", "corral_broker_connected", "corral_database_connected",
        # The spool: what goes in and why, what fails, what waits, how it batches.
        "corral_ingress_spooled_total", "corral_ingress_spool_failures_total", "corral_worker_spool_depth",
        "corral_worker_spool_oldest_seconds", "corral_ingress_spool_batch_size", "corral_ingress_spool_connected",
        # SQS (CORRAL_BUFFER=sqs): the queues' depth, the lag, the billed requests.
        "corral_worker_sqs_queue_messages", "corral_worker_sqs_oldest_received_seconds", "corral_sqs_requests_total",
    ),
    "deliveries.json": (
        # What the corral-deliveries alerts watch.
        "corral_worker_deliveries_total", "corral_worker_result_events_pending",
        "corral_worker_result_events_oldest_seconds", "corral_worker_result_events_published_total",
    ),
}
DASHBOARD_TABLES = {
    "deliveries.json": ("delivery_summary", "delivery_summary_changes", "suppressions"),
}


def grafana_datasources() -> list[dict]:
    """The data sources the compose stack provisions."""
    found = []
    for path in sorted((DEPLOY / "grafana/provisioning/datasources").glob("*.yaml")):
        found += yaml.safe_load(path.read_text())["datasources"]
    return found


def grafana() -> None:
    print("grafana")
    kustomization = yaml.safe_load((DEPLOY / "grafana/kustomization.yaml").read_text())
    in_configmaps = {f for g in kustomization.get("configMapGenerator", []) for f in g.get("files", [])}
    provisioned_types = {ds["type"] for ds in grafana_datasources()}
    dashboards = sorted((DEPLOY / "grafana").glob("*.json"))
    check({p.name for p in dashboards} == set(DASHBOARD_METRICS), "every dashboard in deploy/grafana is known to this check",
          str(sorted(p.name for p in dashboards)))
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        check(bool(dashboard.get("uid")) and bool(dashboard.get("title")), f"{path.name}: has a uid and a title")
        check(path.name in in_configmaps, f"{path.name}: in a ConfigMap of deploy/grafana/kustomization.yaml")
        panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
        check(all(p.get("targets") for p in panels), f"{path.name}: every panel has a query")
        ids = [p["id"] for p in dashboard["panels"]]
        check(len(ids) == len(set(ids)), f"{path.name}: panel ids are unique")
        variables = {v["name"]: v["query"] for v in dashboard.get("templating", {}).get("list", []) if v.get("type") == "datasource"}
        for variable, plugin in variables.items():
            check(plugin in provisioned_types, f"{path.name}: the compose stack provisions a {plugin} data source for ${{{variable}}}")
        targets = [t for p in panels for t in p.get("targets", [])]
        # Each query on a data source variable of its own type, so that one
        # dashboard works on any Grafana that has the two kinds of source.
        misplaced = []
        for panel in panels:
            for target in panel.get("targets", []):
                source = target.get("datasource") or panel.get("datasource") or {}
                uid = source.get("uid", "")
                query = "expr" if source.get("type") == "prometheus" else "rawSql"
                if not (uid.startswith("${") and variables.get(uid[2:-1]) == source.get("type") and target.get(query)):
                    misplaced.append(f"panel {panel['id']} {target.get('refId')}")
        check(not misplaced, f"{path.name}: every query is on a data source variable of its type", ", ".join(misplaced))
        exprs = " ".join(t.get("expr", "") for t in targets)
        for needed in DASHBOARD_METRICS.get(path.name, ()):
            check(needed in exprs, f"{path.name}: shows {needed}")
        sqls = [t["rawSql"] for t in targets if "rawSql" in t]
        for table in DASHBOARD_TABLES.get(path.name, ()):
            check(any(re.search(rf"\b{table}\b", q) for q in sqls), f"{path.name}: reads {table}")
        for q in sqls:
            # The exact totals are the two tables added together; either
            # alone misses what the worker has not folded yet.
            if re.search(r"\bdelivery_summary(_changes)?\b", q):
                check(
                    re.search(r"\bdelivery_summary\b", q) and "delivery_summary_changes" in q and "UNION ALL" in q,
                    f"{path.name}: SQL reads delivery_summary and delivery_summary_changes together (UNION ALL)",
                    q.splitlines()[0],
                )
        if sqls:
            # Exactness against a live rate: a reader must know which.
            for panel in panels:
                check(
                    re.search(r"\bSource: (Prometheus|PostgreSQL)\b", panel.get("description", "")) is not None,
                    f"{path.name}: panel {panel['id']} ({panel['title']}) says its source in its description",
                )


# ---------------------------------------------------------------------------
# Dockerfile: builds the binaries the workspace declares, the way the README
# builds them.
# ---------------------------------------------------------------------------


def cargo_build(command: str) -> tuple[frozenset, frozenset] | None:
    """(packages and bins, flags) of the first `cargo build` in a shell command."""
    for part in re.split(r"&&|;|\|\|", command):
        words = shlex.split(part.replace("\\\n", " "))
        if words[:2] == ["cargo", "build"]:
            targets, flags = set(), set()
            it = iter(words[2:])
            for word in it:
                if word in ("-p", "--package", "--bin"):
                    targets.add(f"{word.lstrip('-')[0]}:{next(it)}")
                elif word.startswith("--package=") or word.startswith("--bin="):
                    key, value = word.lstrip("-").split("=", 1)
                    targets.add(f"{key[0]}:{value}")
                elif word.startswith("-"):
                    flags.add(word)
            return frozenset(targets), frozenset(flags)
    return None


def dockerfile() -> None:
    print("Dockerfile")
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    instructions = parser.structure
    stages = [i["value"] for i in instructions if i["instruction"] == "FROM"]
    check(len(stages) >= 3, "multi-stage build", str(stages))
    runs = [i["value"] for i in instructions if i["instruction"] == "RUN"]
    cooks = [r for r in runs if "cargo chef cook" in r]
    check(bool(cooks), "dependencies built in their own layer (cargo chef cook) before the sources are copied")
    builds = [b for b in (cargo_build(r) for r in runs) if b]
    check(len(builds) == 1, "exactly one `cargo build`", str(builds))
    if not builds:
        return
    targets, flags = builds[0]
    check({"--release", "--locked"} <= flags, "release build with the locked dependencies", str(sorted(flags)))

    # The binaries the workspace declares.
    declared = {}
    for package_dir in ("ingress", "worker"):
        manifest = tomllib.loads((ROOT / package_dir / "Cargo.toml").read_text())
        declared[manifest["package"]["name"]] = [b["name"] for b in manifest.get("bin", [])]
    check(
        {t.split(":", 1)[1] for t in targets if t.startswith("p:")} == set(declared),
        "the Dockerfile builds the packages corral-ingress and corral-worker",
        str(sorted(targets)),
    )
    if cooks:
        cook_words = shlex.split(cooks[0])
        cook_packages = {cook_words[i + 1] for i, w in enumerate(cook_words) if w in ("-p", "--package")}
        check(cook_packages == set(declared), "cargo chef cooks the same packages")
    copies = " ".join(i["value"] for i in instructions if i["instruction"] == "COPY" and "--from=builder" in i["value"])
    for binaries in declared.values():
        for binary in binaries:
            check(f"/usr/local/bin/{binary}" in copies, f"the image holds /usr/local/bin/{binary}")
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    check(bool(users) and users[-1].split(":")[0] not in ("0", "root"), "the image runs as a non-root user", str(users))

    # The README's build command, when it has one, must be the same build.
    readme = ROOT / "README.md"
    readme_builds = []
    if readme.exists():
        for line in readme.read_text().splitlines():
            if "cargo build" in line and "--release" in line:
                found = cargo_build(line.strip().strip("`").lstrip("$ ").strip())
                if found:
                    readme_builds.append(found)
    if readme_builds:
        check(
            (targets, flags) in readme_builds,
            "the Dockerfile's `cargo build` matches the README's release build",
            f"Dockerfile {sorted(targets)} {sorted(flags)}; README {[(sorted(t), sorted(f)) for t, f in readme_builds]}",
        )
    else:
        print("  note  README.md has no `cargo build --release` line yet: only the workspace manifests were compared")

    # .dockerignore must not drop what the build needs.
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    needed = ["Cargo.toml", "Cargo.lock", "shared", "ingress", "worker", "tests", "worker/migrations", "tests/fixtures"]
    for path in needed:
        hit = [p for p in ignored if p.rstrip("/") == path or (p.endswith("/") and path.startswith(p))]
        check(not hit, f".dockerignore keeps {path}", str(hit))
    check("target/" in ignored and ".git/" in ignored, ".dockerignore drops target/ and .git/")


def main() -> int:
    for rendered in sys.argv[1:]:
        kubernetes(pathlib.Path(rendered))
        postgres_monitoring(pathlib.Path(rendered))
        operators(pathlib.Path(rendered))
    aws()
    runbooks()
    compose()
    grafana()
    dockerfile()
    if failures:
        print(f"\n{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
