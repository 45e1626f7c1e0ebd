"""What the operators corral runs on require of its manifests, from their own
sources and documentation (CloudNativePG and its Barman Cloud plugin, the
RabbitMQ Cluster Operator, KEDA, the Gateway API and Envoy Gateway, EKS):
settings that look right and do nothing, or do the opposite. Called by
check_deploy.py once per rendered kustomization.
"""

import json
import pathlib
import re

from checklib import ROLE_ARN, ROOT, by_kind, check, load_all

WEBHOOK_PATHS = "/webhooks/dropcowboy"
# Envoy's access-log operators that write the request's path with its query
# string (a `?token=` included); %REQ_WITHOUT_QUERY(...)% writes it without.
PATH_WITH_QUERY = re.compile(r"%REQ\((?:X-ENVOY-ORIGINAL-PATH\?)?:PATH\)%|%REQ\(X-ENVOY-ORIGINAL-PATH\)%")
ENVOY_PROXY_FIELDS = {"provider", "logging", "telemetry", "bootstrap", "concurrency", "routingType", "extraArgs",
                      "mergeGateways", "shutdown", "filterOrder", "backendTLS", "ipFamily"}


def operators(rendered: pathlib.Path) -> None:
    print(f"operators' requirements ({rendered.name})")
    docs = load_all(rendered)
    kinds = by_kind(docs)
    storage_classes(docs)
    for cluster in kinds.get("Cluster", []):
        cloudnative_pg(cluster, kinds)
    images(kinds)
    for scaled in kinds.get("ScaledObject", []):
        spec = scaled["spec"]
        # KEDA applies cooldownPeriod only when it scales the target to zero
        # (or to idleReplicaCount); between min and max the HPA's own
        # scale-down behavior rules.
        check(
            "cooldownPeriod" not in spec or spec.get("minReplicaCount", 0) == 0 or "idleReplicaCount" in spec,
            f"ScaledObject {scaled['metadata']['name']}: no cooldownPeriod with minReplicaCount > 0 (KEDA uses it only to scale to zero)",
            f"cooldownPeriod {spec.get('cooldownPeriod')}, minReplicaCount {spec.get('minReplicaCount')}",
        )
    public_route(kinds, overlay="Namespace" in kinds)
    eks_backups(kinds)
    cnpg_status_runbooks(kinds)


def storage_classes(docs: list[dict]) -> None:
    """A claim whose class is "" binds only to volumes without a class, so
    nothing is provisioned for it: the pods stay Pending on any cluster with
    a default StorageClass. Unset means the default class."""

    def empty(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("storageClassName", "storageClass") and value == "":
                    yield f"{path}.{key}"
                yield from empty(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                yield from empty(item, f"{path}[{i}]")

    found = [f"{d['kind']}/{d['metadata']['name']}: {p}" for d in docs for p in empty(d.get("spec", {}), "spec")]
    check(not found, 'no volume claim with an empty storage class ("" provisions nothing; leave it unset for the default)', "; ".join(found))


def cloudnative_pg(cluster: dict, kinds: dict[str, list[dict]]) -> None:
    name, spec = cluster["metadata"]["name"], cluster["spec"]
    sync = spec.get("postgresql", {}).get("synchronous", {})
    # With `any 1`, losing the primary and the standby that confirmed a
    # commit leaves a replica that may lack it; the quorum check refuses to
    # promote it (CloudNativePG docs, failover.md, "Failover Quorum").
    check(
        sync.get("failoverQuorum") is True,
        f"CloudNativePG {name}: failover quorum (postgresql.synchronous.failoverQuorum: true), so no replica that may lack an acknowledged commit is promoted",
        json.dumps(sync),
    )
    archivers = [p for p in spec.get("plugins", []) if p.get("isWALArchiver") is True]
    for plugin in archivers:
        # The archive's folder in the bucket. A recovered cluster archives
        # under a new name; left implicit (the cluster's name), the next
        # `kubectl apply -k` would point archiving back at the old folder.
        check(
            bool(plugin.get("parameters", {}).get("serverName")),
            f"CloudNativePG {name}: the WAL archive's serverName is explicit (a recovery changes it in the overlay)",
            json.dumps(plugin.get("parameters", {})),
        )
    # The synchronous-standby alert reads a custom query: the standbys in
    # quorum (sync_state), which the default cnpg_pg_replication_streaming_replicas
    # (every walsender, catching-up ones too) cannot tell.
    refs = spec.get("monitoring", {}).get("customQueriesConfigMap", [])
    maps = {c["metadata"]["name"]: c for c in kinds.get("ConfigMap", [])}
    queries = "".join(maps.get(r.get("name"), {}).get("data", {}).get(r.get("key"), "") for r in refs)
    check(
        re.search(r"(?m)^sync_quorum:", queries) is not None and "sync_state" in queries and re.search(r"(?m)^\s+- standbys:", queries) is not None,
        f"CloudNativePG {name}: a custom query sync_quorum.standbys (pg_stat_replication.sync_state) for CorralPostgresSyncStandbyLost",
        json.dumps(refs),
    )


def images(kinds: dict[str, list[dict]]) -> None:
    """The engines' images name a patch release or a digest: a floating tag
    changes the database or broker under a running cluster at its next
    rollout."""
    pinned = re.compile(r"(:\d+\.\d+[\w.-]*|@sha256:[0-9a-f]{64})$")
    for cluster in kinds.get("Cluster", []):
        image = cluster["spec"].get("imageName", "")
        check(bool(pinned.search(image)), f"CloudNativePG {cluster['metadata']['name']}: imageName pinned to a minor release or digest", image)
    for rabbit in kinds.get("RabbitmqCluster", []):
        image = rabbit["spec"].get("image", "")
        check(
            re.search(r":\d+\.\d+\.\d+[\w.-]*$|@sha256:[0-9a-f]{64}$", image) is not None,
            f"RabbitmqCluster {rabbit['metadata']['name']}: image pinned to a patch release or digest",
            image,
        )


def public_route(kinds: dict[str, list[dict]], overlay: bool) -> None:
    """The public route: a Gateway API HTTPRoute to the webhook paths only,
    TLS at the Gateway, no access log of query strings, and the Gateway's
    proxies admitted by ingress's NetworkPolicy."""
    nginx = [
        i["metadata"]["name"] for i in kinds.get("Ingress", [])
        if i["spec"].get("ingressClassName") == "nginx"
        or any(k.startswith("nginx.ingress.kubernetes.io/") for k in i["metadata"].get("annotations", {}))
    ]
    check(not nginx, "no ingress-nginx Ingress (retired: no releases or security fixes after March 2026)", str(nginx))
    routes = kinds.get("HTTPRoute", [])
    if not overlay:
        return
    check(bool(routes), "the public route is a Gateway API HTTPRoute")
    services = {s["metadata"]["name"]: s for s in kinds.get("Service", [])}
    http_ports = {p["port"] for p in services.get("corral-ingress", {}).get("spec", {}).get("ports", []) if p.get("targetPort") == "http"}
    gateways = {g["metadata"]["name"]: g for g in kinds.get("Gateway", [])}
    for route in routes:
        name = f"HTTPRoute {route['metadata']['name']}"
        rules = route["spec"].get("rules", [])
        backends = [b for r in rules for b in r.get("backendRefs", [])]
        check(
            bool(backends) and all(b.get("kind", "Service") == "Service" and b["name"] == "corral-ingress" and b.get("port") in http_ports for b in backends),
            f"{name}: sends to corral-ingress's webhook port only ({sorted(http_ports)}), never the admin port",
            json.dumps(backends),
        )
        paths = [m.get("path", {}) for r in rules for m in (r.get("matches") or [{}])]
        check(
            all(p.get("type") in ("PathPrefix", "Exact") and str(p.get("value", "")).startswith(WEBHOOK_PATHS) for p in paths),
            f"{name}: matches {WEBHOOK_PATHS} paths only",
            json.dumps(paths),
        )
        for parent in route["spec"].get("parentRefs", []):
            gateway = gateways.get(parent["name"])
            if gateway is None:
                print(f"  note  {name}: Gateway {parent['name']} is not in this kustomization: its TLS and access log checked there")
                continue
            gateway_checks(gateway, parent, kinds)


def gateway_checks(gateway: dict, parent: dict, kinds: dict[str, list[dict]]) -> None:
    name = f"Gateway {gateway['metadata']['name']}"
    listeners = [l for l in gateway["spec"].get("listeners", []) if l["name"] == parent.get("sectionName", l["name"])]
    check(
        bool(listeners) and all(
            l["protocol"] == "HTTPS" and l.get("tls", {}).get("mode", "Terminate") == "Terminate" and l.get("tls", {}).get("certificateRefs")
            for l in listeners
        ),
        f"{name}: the route's listener terminates TLS (HTTPS, a certificate)",
        json.dumps(listeners),
    )
    ref = gateway["spec"].get("infrastructure", {}).get("parametersRef", {})
    proxies = {p["metadata"]["name"]: p for p in kinds.get("EnvoyProxy", [])}
    proxy = proxies.get(ref.get("name")) if ref.get("kind") == "EnvoyProxy" else None
    check(proxy is not None, f"{name}: its proxies' settings are an EnvoyProxy here (infrastructure.parametersRef)", json.dumps(ref))
    if proxy is None:
        return
    spec = proxy["spec"]
    check(set(spec) <= ENVOY_PROXY_FIELDS, f"EnvoyProxy {proxy['metadata']['name']}: only known spec fields (no schema package; checked here)", str(sorted(spec)))
    # Envoy Gateway's default access log writes the path with its query
    # string: a sender still using `?token=` would leave its token there.
    log = spec.get("telemetry", {}).get("accessLog", {})
    formats = [s.get("format", {}) for s in log.get("settings", [])]
    written = [f.get("text", "") + " ".join((f.get("json") or {}).values()) for f in formats]
    check(
        log.get("disable") is True or (bool(formats) and all(w and not PATH_WITH_QUERY.search(w) for w in written)),
        f"EnvoyProxy {proxy['metadata']['name']}: the access log writes no query string (%REQ_WITHOUT_QUERY(...)%), or is off",
        json.dumps(log),
    )
    idle_timeouts(gateway, kinds)
    # Only this Gateway's proxies reach ingress's webhook port.
    policies = [p for p in kinds.get("NetworkPolicy", []) if p["metadata"]["name"] == "corral-ingress"]
    owner = {"gateway.envoyproxy.io/owning-gateway-name": gateway["metadata"]["name"]}
    admitted = any(
        owner.items() <= peer.get("podSelector", {}).get("matchLabels", {}).items()
        for p in policies for rule in p["spec"].get("ingress", [])
        if any(port.get("port") == "http" for port in rule.get("ports", []))
        for peer in rule.get("from", [])
    )
    check(admitted, f"NetworkPolicy corral-ingress: admits {name}'s proxies on the webhook port", str(owner))


def idle_timeouts(gateway: dict, kinds: dict[str, list[dict]]) -> None:
    """Envoy keeps an idle upstream connection an hour by default; corral-ingress
    closes one after CORRAL_KEEP_ALIVE_SECS, and a request Envoy sends on a
    connection being closed fails. The proxy must close first."""
    settings = next((c.get("data") or {} for c in kinds.get("ConfigMap", []) if c["metadata"]["name"].startswith("corral-ingress")), {})
    readme = re.search(r"^\| `CORRAL_KEEP_ALIVE_SECS` \| `(\d+)`", (ROOT / "README.md").read_text(), re.M)
    keep_alive = int(settings.get("CORRAL_KEEP_ALIVE_SECS", readme.group(1) if readme else 75))
    routes = {r["metadata"]["name"] for r in kinds.get("HTTPRoute", [])
              if any(p["name"] == gateway["metadata"]["name"] for p in r["spec"].get("parentRefs", []))}
    timeouts = [
        policy["spec"].get("timeout", {}).get("http", {}).get("connectionIdleTimeout", "")
        for policy in kinds.get("BackendTrafficPolicy", [])
        for ref in policy["spec"].get("targetRefs", [])
        if (ref["kind"], ref["name"]) in {("Gateway", gateway["metadata"]["name"])} | {("HTTPRoute", r) for r in routes}
    ]
    seconds = [int(t[:-1]) * {"s": 1, "m": 60, "h": 3600}[t[-1]] for t in timeouts if re.fullmatch(r"\d+[smh]", t)]
    check(
        bool(seconds) and max(seconds) < keep_alive,
        f"{gateway['kind']} {gateway['metadata']['name']}: a BackendTrafficPolicy closes idle connections to corral-ingress before it does (CORRAL_KEEP_ALIVE_SECS {keep_alive} s)",
        str(timeouts),
    )


def eks_backups(kinds: dict[str, list[dict]]) -> None:
    """On EKS every pod reaches AWS with its ServiceAccount's role: the backups
    too, never with a stored access key (the Barman Cloud plugin's
    object_stores.md recommends IRSA on EKS)."""
    roles = {
        a["metadata"]["name"]: a["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn")
        for a in kinds.get("ServiceAccount", [])
    }
    roles = {k: v for k, v in roles.items() if v}
    if not roles:
        return
    for store in kinds.get("ObjectStore", []):
        credentials = store["spec"].get("configuration", {}).get("s3Credentials", {})
        check(
            credentials == {"inheritFromIAMRole": True},
            f"ObjectStore {store['metadata']['name']}: on EKS, the cluster's IAM role (s3Credentials.inheritFromIAMRole), no access key",
            json.dumps(credentials),
        )
    for cluster in kinds.get("Cluster", []):
        template = cluster["spec"].get("serviceAccountTemplate", {}).get("metadata", {}).get("annotations", {})
        role = template.get("eks.amazonaws.com/role-arn", "")
        check(
            bool(ROLE_ARN.fullmatch(role)) and role not in roles.values(),
            f"CloudNativePG {cluster['metadata']['name']}: an IAM role of its own for the backups (serviceAccountTemplate, eks.amazonaws.com/role-arn)",
            role,
        )


def cnpg_status_runbooks(kinds: dict[str, list[dict]]) -> None:
    """`kubectl cnpg status` fetches each instance's status through the API
    server's pods/proxy, to the instance manager's port 8000. A policy that
    admits port 8000 from the operator's pods only refuses the API server,
    so runbooks must not rely on it there."""
    for cluster in kinds.get("Cluster", []):
        labels = {"cnpg.io/cluster": cluster["metadata"]["name"]}
        policies = [
            p for p in kinds.get("NetworkPolicy", [])
            if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
            and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        ]
        api_server = not policies or any(
            "ipBlock" in peer
            for p in policies for rule in p["spec"].get("ingress", [])
            if rule.get("ports") is None or any(port.get("port") == 8000 for port in rule["ports"])
            for peer in rule.get("from", [{"ipBlock": {}}])
        )
        if api_server:
            continue
        text = "\n".join(
            page.read_text() for page in [ROOT / "docs/operations.md", *sorted((ROOT / "docs/operations").glob("*.md"))]
        )
        hits = [line.strip() for line in text.splitlines() if re.search(r"kubectl cnpg\b[^`\n]*\bstatus\b", line)]
        check(
            not hits,
            f"docs/operations*: no step runs `kubectl cnpg status` (NetworkPolicy keeps the API server's pods/proxy off {cluster['metadata']['name']}'s port 8000)",
            f"{len(hits)} line(s), e.g. {hits[:2]}",
        )
