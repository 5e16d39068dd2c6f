#!/usr/bin/env python3
"""Offline checks of k8s/: schemas, and agreement with the teamhub binary.

Run by scripts/checks/k8s.sh inside its virtualenv (kubernetes-validate, PyYAML,
jsonschema). Arguments: path to the `teamhub` binary. Exits non-zero on any failure.

1. Every overlay (and the base) renders with `kubectl kustomize`.
2. Every rendered object validates strictly (unknown fields are errors) against the
   Kubernetes schemas of the oldest and newest versions we support. Custom resources
   validate against a schema vendored in k8s/schemas/; a kind with neither fails.
3. The teamhub Deployment agrees with `teamhub serve --help` and the contract: every
   environment variable (direct, or a key of a ConfigMap/Secret it loads) is one the
   binary reads, the listen port is the container port the probes, Service, Ingress,
   ServiceMonitor and NetworkPolicy use, liveness is /healthz and readiness /readyz,
   writes go to mounted volumes, the grace period outlasts preStop plus the drain.
4. The binary itself is started with the ConfigMap's settings (listen address and
   paths moved to a scratch directory) and must answer 200 on every probe path the
   manifests use, then drain and exit 0 on SIGTERM.
5. k8s/grafana-dashboard.json and the alert rules (k8s/base/prometheusrule.yaml, the
   same rules as docs/operations.md shows) use only metric names the code defines, and
   docs/operations.md documents every one of them.

`--self-test` additionally breaks rendered manifests on purpose and asserts that each
check in step 3 notices, so these checks cannot silently pass.
"""

import copy
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
TARGETS = ["base", "overlays/dev", "overlays/prod"]
# Oldest supported (native preStop `sleep` needs 1.30) and newest the validator knows.
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): K8S / "schemas/servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): K8S / "schemas/prometheusrule-monitoring-v1.json",
    ("cert-manager.io/v1", "Certificate"): K8S / "schemas/certificate-cert-manager-v1.json",
}
# Metrics the alerts may use that other exporters define.
FOREIGN_METRICS = {"up", "kube_deployment_status_replicas_available", "kube_deployment_spec_replicas"}
# Read by the process but not a teamhub flag: the log filter of tracing-subscriber.
EXTRA_ENV = {"RUST_LOG"}
PROBE_PATHS = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}

failures = []
expecting_failures = False


def fail(msg):
    failures.append(msg)
    print(f"  caught (as intended): {msg}" if expecting_failures else f"FAIL {msg}")


def render(target):
    out = subprocess.run(
        [os.environ.get("KUBECTL", "kubectl"), "kustomize", str(K8S / target)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        fail(f"{target}: kubectl kustomize failed:\n{out.stderr}")
        return []
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate_schemas(target, docs):
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        name = f"{target}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if key in CRD_SCHEMAS:
            schema = json.loads(CRD_SCHEMAS[key].read_text())
            try:
                jsonschema.validate(doc, schema)
                print(f"ok   {name} (custom resource, vendored schema {CRD_SCHEMAS[key].name})")
            except jsonschema.ValidationError as e:
                fail(f"{name}: {e.message} at {list(e.absolute_path)}")
            continue
        before = len(failures)
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                fail(f"{name}: no Kubernetes schema for {key} and none vendored in k8s/schemas/")
                break
            except kubernetes_validate.ValidationError as e:
                fail(f"{name}: invalid for Kubernetes {version}: {e.message} at {list(e.path)}")
        if len(failures) == before:
            print(f"ok   {name} (strict, Kubernetes {' and '.join(KUBE_VERSIONS)})")


def serve_help(binary):
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, check=True)
    envs = set(re.findall(r"\[env: ([A-Z0-9_]+)[=\]]", out.stdout))
    if "TEAMHUB_LISTEN" not in envs:
        raise SystemExit(f"cannot read environment variables from `{binary} serve --help`")
    return envs


def find(docs, kind, name=None):
    return [
        d for d in docs
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def hub_container(deployment):
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        if c["name"] == "teamhub":
            return c
    return None


def settings(docs, container, template_secret_keys):
    """Environment of the hub container: name -> value (None when not a literal)."""
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            cms = find(docs, "ConfigMap", source["configMapRef"]["name"])
            if not cms:
                fail(f"envFrom ConfigMap {source['configMapRef']['name']} is not in the render")
            for cm in cms:
                env.update(cm.get("data", {}))
        if "secretRef" in source:
            secrets = find(docs, "Secret", source["secretRef"]["name"])
            keys = set()
            for s in secrets:
                keys |= set(s.get("data", {})) | set(s.get("stringData", {}))
            # A Secret created out of band (prod) has the template's keys.
            for k in keys or template_secret_keys:
                env.setdefault(k, None)
    for e in container.get("env", []):
        env[e["name"]] = e.get("value")
    return env


def check_deployment(target, docs, envs, template_secret_keys):
    """Step 3; returns the hub settings for step 4."""
    deployments = find(docs, "Deployment", "teamhub")
    if len(deployments) != 1:
        fail(f"{target}: expected one Deployment teamhub, found {len(deployments)}")
        return None
    dep = deployments[0]
    pod = dep["spec"]["template"]["spec"]
    c = hub_container(dep)
    if c is None:
        fail(f"{target}: Deployment teamhub has no container named teamhub")
        return None
    env = settings(docs, c, template_secret_keys)
    for name in sorted(env):
        if name not in envs and name not in EXTRA_ENV:
            fail(f"{target}: environment variable {name} is not read by `teamhub serve`")
    key_sources = {"TEAMHUB_JWT_SECRET", "TEAMHUB_JWT_PUBLIC_KEY", "TEAMHUB_JWKS_URL", "TEAMHUB_OIDC_ISSUER"}
    if not (key_sources & set(env)):
        fail(f"{target}: no token key configured: a node listening on 0.0.0.0 refuses to start")
    node_id = [e for e in c.get("env", []) if e["name"] == "TEAMHUB_NODE_ID"]
    if not node_id or node_id[0].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        fail(f"{target}: TEAMHUB_NODE_ID must come from the pod name (fieldRef metadata.name)")

    listen = env.get("TEAMHUB_LISTEN") or ""
    m = re.fullmatch(r"0\.0\.0\.0:(\d+)", listen)
    if not m:
        fail(f"{target}: TEAMHUB_LISTEN must be 0.0.0.0:PORT in a pod, is {listen!r}")
        return env
    port = int(m.group(1))
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if ports.get("http") != port:
        fail(f"{target}: container port http is {ports.get('http')}, the node listens on {port}")

    def resolves(p):
        return p == port or ports.get(p) == port

    for probe, path in PROBE_PATHS.items():
        spec = c.get(probe)
        if spec is None:
            if probe != "startupProbe":
                fail(f"{target}: {probe} missing")
            continue
        get = spec.get("httpGet", {})
        if get.get("path") != path:
            fail(f"{target}: {probe} path is {get.get('path')!r}, must be {path}")
        if not resolves(get.get("port")):
            fail(f"{target}: {probe} port {get.get('port')!r} is not the listen port {port}")

    # TLS at the node: both files, from a whole Secret volume (a subPath mount never
    # sees a renewal), and every probe, the ingress and the scrape speak HTTPS.
    tls_files = [env.get("TEAMHUB_TLS_CERT"), env.get("TEAMHUB_TLS_KEY")]
    tls = any(tls_files)
    if tls and not all(tls_files):
        fail(f"{target}: TEAMHUB_TLS_CERT and TEAMHUB_TLS_KEY go together")
    scheme = "HTTPS" if tls else "HTTP"
    for probe in PROBE_PATHS:
        got = c.get(probe, {}).get("httpGet", {}).get("scheme", "HTTP")
        if probe in c and got != scheme:
            fail(f"{target}: {probe} scheme is {got}, the node serves {scheme}")
    if tls:
        secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
        for f in filter(None, tls_files):
            mount = [m for m in c.get("volumeMounts", []) if f.startswith(m["mountPath"].rstrip("/") + "/")]
            if not mount or mount[0]["name"] not in secret_volumes:
                fail(f"{target}: {f} is not in a mounted Secret volume")
            elif "subPath" in mount[0]:
                fail(f"{target}: {f} is mounted with subPath, which never sees a renewed certificate")

    mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
    if c.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
        fail(f"{target}: readOnlyRootFilesystem must be true")
    paths = [env.get("TEAMHUB_ACTIVITY_SPILL_PATH")]
    db = env.get("TEAMHUB_DATABASE_URL")
    if db and db.startswith("sqlite://"):
        paths.append(db[len("sqlite://"):])
    for p in paths:
        if not p or not any(p.startswith(mp.rstrip("/") + "/") for mp in mounts):
            fail(f"{target}: {p!r} is not under a mounted volume {mounts} (root file system is read-only)")
    sc = c.get("securityContext", {})
    if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("allowPrivilegeEscalation") is not False:
        fail(f"{target}: container must drop ALL capabilities and forbid privilege escalation")
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        fail(f"{target}: pod must run as non-root")

    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    drain = int(env.get("TEAMHUB_DRAIN_TIMEOUT") or 10)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    # A drain waits up to the timeout for sockets, the HTTP server and the activity flush.
    if grace <= pre_stop + 3 * drain:
        fail(f"{target}: terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + 3 x drain timeout {drain}")
    if pre_stop <= 0:
        fail(f"{target}: preStop pause missing")

    labels = dep["spec"]["template"]["metadata"]["labels"]

    def selects(selector):
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    services = find(docs, "Service", "teamhub")
    if len(services) != 1:
        fail(f"{target}: expected one Service teamhub")
        return env
    svc = services[0]
    if not selects(svc["spec"].get("selector")):
        fail(f"{target}: Service teamhub does not select the teamhub pods")
    if svc["spec"].get("sessionAffinity", "None") != "None":
        fail(f"{target}: Service must not use session affinity")
    svc_ports = {p.get("name"): p for p in svc["spec"]["ports"]}
    for p in svc_ports.values():
        if not resolves(p.get("targetPort")):
            fail(f"{target}: Service port {p.get('name')} targets {p.get('targetPort')!r}, not the listen port")
    for pdb in find(docs, "PodDisruptionBudget"):
        if not selects(pdb["spec"]["selector"].get("matchLabels")):
            fail(f"{target}: PodDisruptionBudget does not select the teamhub pods")
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != ("Deployment", "teamhub"):
            fail(f"{target}: HPA scales {ref}, not Deployment teamhub")
    if "replicas" in dep["spec"] and find(docs, "HorizontalPodAutoscaler"):
        fail(f"{target}: Deployment sets replicas although an HPA owns the count")
    for ing in find(docs, "Ingress"):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                if backend["name"] != "teamhub" or backend["port"].get("name", backend["port"].get("number")) not in (
                    set(svc_ports) | {p["port"] for p in svc_ports.values()}
                ):
                    fail(f"{target}: Ingress backend {backend} is not a port of Service teamhub")
        annotations = ing["metadata"].get("annotations", {})
        if any("affinity" in k for k in annotations):
            fail(f"{target}: Ingress must not use session affinity")
        backend_protocol = annotations.get("nginx.ingress.kubernetes.io/backend-protocol", "HTTP")
        if backend_protocol != scheme:
            fail(f"{target}: Ingress backend-protocol is {backend_protocol}, the node serves {scheme}")
        if int(annotations.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "60")) < 3600:
            fail(f"{target}: Ingress proxy-read-timeout below 3600 s cuts idle WebSockets")
    for sm in find(docs, "ServiceMonitor"):
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in svc_ports or ep.get("path") != "/metrics":
                fail(f"{target}: ServiceMonitor endpoint {ep} is not Service port + /metrics")
            if ep.get("scheme", "http").upper() != scheme:
                fail(f"{target}: ServiceMonitor scrapes {ep.get('scheme', 'http')}, the node serves {scheme}")
    for np in find(docs, "NetworkPolicy"):
        if selects(np["spec"]["podSelector"].get("matchLabels")):
            for rule in np["spec"].get("ingress", []):
                for p in rule.get("ports", []):
                    if not resolves(p.get("port")):
                        fail(f"{target}: NetworkPolicy admits port {p.get('port')!r}, not the listen port")
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_binary(target, binary, env, probe_paths):
    """Step 4: the binary accepts the manifests' settings and answers the probes."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("TEAMHUB_")}
        run_env.update({k: v for k, v in env.items() if v is not None})
        run_env.update({
            "TEAMHUB_LISTEN": f"127.0.0.1:{port}",
            "TEAMHUB_ACTIVITY_SPILL_PATH": f"{tmp}/activity.spill",
            "TEAMHUB_DATABASE_URL": f"sqlite://{tmp}/hub.db",
            "TEAMHUB_JWT_SECRET": "k8s-check-secret-0123456789abcdef",
            "TEAMHUB_NODE_ID": "k8s-check",
        })
        # Cluster services are not part of this check: a single node with SQLite.
        run_env.pop("TEAMHUB_REDIS_URL", None)
        base, context = f"http://127.0.0.1:{port}", None
        if run_env.get("TEAMHUB_TLS_CERT"):
            # The Secret's files come from cert-manager in a cluster; here, a
            # self-signed pair for 127.0.0.1 that the probes trust.
            cert, key = f"{tmp}/tls.crt", f"{tmp}/tls.key"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1"],
                check=True, capture_output=True,
            )
            run_env.update({"TEAMHUB_TLS_CERT": cert, "TEAMHUB_TLS_KEY": key})
            base, context = f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=cert)
        proc = subprocess.Popen([binary, "serve"], env=run_env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            pending = set(probe_paths)
            while pending and time.monotonic() < deadline:
                if proc.poll() is not None:
                    fail(f"{target}: teamhub serve exited with {proc.returncode} on the manifests' settings:\n{proc.stderr.read()}")
                    return
                for path in sorted(pending):
                    try:
                        with urllib.request.urlopen(f"{base}{path}", timeout=2, context=context) as r:
                            if r.status == 200:
                                pending.discard(path)
                    except OSError:
                        pass
                time.sleep(0.1)  # polling interval, bounded by the deadline
            for path in sorted(pending):
                fail(f"{target}: probe path {path} did not answer 200 within 30 s")
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            if code != 0:
                fail(f"{target}: teamhub serve exited {code} after SIGTERM, expected 0")
            else:
                print(f"ok   {target}: teamhub serve with its settings answered {sorted(probe_paths)} over {base.split(':')[0]} and drained")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def metric_names():
    names = set()
    for src in [ROOT / "hub/src/metrics.rs", *sorted((ROOT / "persistence/src").rglob("*.rs")),
                *sorted((ROOT / "presence/src").rglob("*.rs")), *sorted((ROOT / "hub/src").rglob("*.rs"))]:
        names |= set(re.findall(r'"(teamhub_[a-z0-9_]+)"', src.read_text()))
    return names


def check_alerts(names, rules=None):
    """The PrometheusRule is the alert block of docs/operations.md, and queries only
    metrics that exist. (PromQL syntax is not checked: promtool is not installable
    from the registries this check may use.)"""
    doc = (ROOT / "docs/operations.md").read_text()
    m = re.search(r"## Alerts\n.*?```yaml\n(.*?)```", doc, re.S)
    if not m:
        fail("docs/operations.md has no alert rules block under ## Alerts")
        return
    documented = yaml.safe_load(m.group(1))
    if rules is None:
        rules = [d for d in yaml.safe_load_all((K8S / "base/prometheusrule.yaml").read_text()) if d]
    if len(rules) != 1 or rules[0]["spec"] != documented:
        fail("k8s/base/prometheusrule.yaml and the rules in docs/operations.md differ")
    alerts = [r for d in rules for g in d["spec"]["groups"] for r in g["rules"]]
    before = len(failures)
    for rule in alerts:
        used = set(re.findall(r"\b(teamhub_[a-z0-9_]+|kube_[a-z0-9_]+|up)\b", rule["expr"]))
        unknown = {u for u in used if not u.startswith("teamhub_") and u not in FOREIGN_METRICS}
        if unknown:
            fail(f"alert {rule.get('alert')} queries {sorted(unknown)}, not a known metric")
        for u in used:
            if u.startswith("teamhub_") and u not in names:
                fail(f"alert {rule.get('alert')} queries {u}, which the code does not define")
        if rule.get("labels", {}).get("severity") not in ("page", "ticket"):
            fail(f"alert {rule.get('alert')} needs severity page or ticket")
    if len(failures) == before:
        print(f"ok   {len(alerts)} alert rules: manifest = docs, metrics defined")


def check_dashboard_and_docs():
    names = metric_names()
    if not names:
        fail("no metric names found in the sources")
        return
    check_alerts(names)
    dashboard = json.loads((K8S / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard.get("panels", []) for t in p.get("targets", [])]
    if not exprs:
        fail("grafana-dashboard.json has no queries")
    used = set()
    for e in exprs:
        for m in re.findall(r"\bteamhub_[a-z0-9_]+", e):
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            if m not in names and base not in names:
                fail(f"grafana-dashboard.json queries {m}, which the code does not define")
            used.add(m if m in names else base)
    docs = (ROOT / "docs/operations.md").read_text()
    for n in sorted(names):
        if f"`{n}`" not in docs:
            fail(f"docs/operations.md does not document metric {n}")
    print(f"ok   dashboard uses {len(used)} of {len(names)} metrics, all defined; operations.md documents all")


def _mutate(docs, fn):
    d = copy.deepcopy(docs)
    fn(d)
    return d


def self_test(binary, docs, prod_docs, envs, template_secret_keys):
    """Break the rendered dev overlay in several ways; each must be reported."""
    global failures, expecting_failures
    expecting_failures = True

    def mutate(path_fn):
        return _mutate(docs, path_fn)

    def dep(d):
        return find(d, "Deployment", "teamhub")[0]

    def cm(d):
        return find(d, "ConfigMap", "teamhub-config")[0]["data"]

    cases = {
        "unknown env var": lambda d: hub_container(dep(d))["env"].append({"name": "TEAMHUB_NOT_A_FLAG", "value": "1"}),
        "readiness path": lambda d: hub_container(dep(d))["readinessProbe"]["httpGet"].update(path="/ready"),
        "liveness port": lambda d: hub_container(dep(d))["livenessProbe"]["httpGet"].update(port=9999),
        "listen port": lambda d: cm(d).update(TEAMHUB_LISTEN="0.0.0.0:9090"),
        "loopback listen": lambda d: cm(d).update(TEAMHUB_LISTEN="127.0.0.1:8080"),
        "spill off the volume": lambda d: cm(d).update(TEAMHUB_ACTIVITY_SPILL_PATH="/tmp/x.spill"),
        "short grace": lambda d: dep(d)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=20),
        "service target": lambda d: find(d, "Service", "teamhub")[0]["spec"]["ports"][0].update(targetPort=81),
        "sticky ingress": lambda d: find(d, "Ingress")[0]["metadata"]["annotations"].update(
            {"nginx.ingress.kubernetes.io/affinity": "cookie"}),
        "https probe of a plain node": lambda d: hub_container(dep(d))["readinessProbe"]["httpGet"].update(
            scheme="HTTPS"),
        "half a TLS pair": lambda d: hub_container(dep(d))["env"].append(
            {"name": "TEAMHUB_TLS_CERT", "value": "/var/lib/teamhub/tls.crt"}),
    }
    def tls_mount(d):
        return [m for m in hub_container(dep(d))["volumeMounts"] if m["name"] == "tls"][0]

    # Breakages of the TLS set-up, on the prod overlay (which has it).
    tls_cases = {
        "TLS files mounted with subPath": lambda d: tls_mount(d).update(subPath="tls.crt"),
        "http probe of a TLS node": lambda d: hub_container(dep(d))["livenessProbe"]["httpGet"].pop("scheme"),
        "ingress speaks http to a TLS node": lambda d: find(d, "Ingress")[0]["metadata"]["annotations"].pop(
            "nginx.ingress.kubernetes.io/backend-protocol"),
        "http scrape of a TLS node": lambda d: find(d, "ServiceMonitor")[0]["spec"]["endpoints"][0].pop("scheme"),
    }
    saved = failures
    runs = [(name, docs, fn) for name, fn in cases.items()]
    runs += [(name, prod_docs, fn) for name, fn in tls_cases.items()]
    for name, rendered, fn in runs:
        failures = []
        print(f"self-test: {name}")
        check_deployment("self-test", _mutate(rendered, fn), envs, template_secret_keys)
        if not failures:
            saved.append(f"self-test: breaking '{name}' went unnoticed")
            print(f"FAIL self-test: breaking '{name}' went unnoticed")
    # A value the binary refuses fails the run of step 4.
    failures = []
    print("self-test: a setting teamhub serve refuses")
    env = settings(docs, hub_container(dep(docs)), template_secret_keys)
    run_binary("self-test", binary, {**env, "TEAMHUB_DRAIN_TIMEOUT": "ten"}, {"/healthz"})
    if not failures:
        saved.append("self-test: a refused setting went unnoticed")
    # The alert checks notice a rule that drifted from the docs or queries a metric
    # nobody defines.
    failures = []
    print("self-test: alert on an undefined metric")
    rules = [d for d in yaml.safe_load_all((K8S / "base/prometheusrule.yaml").read_text()) if d]
    rules[0]["spec"]["groups"][0]["rules"][0]["expr"] = "sum(rate(teamhub_no_such_metric[5m])) > 0"
    check_alerts(metric_names(), rules)
    if len(failures) < 2:
        saved.append("self-test: a drifted alert on an undefined metric went unnoticed")
    # Schema validation must reject an unknown field.
    failures = []
    broken = mutate(lambda d: hub_container(dep(d)).update(notAField=True))
    validate_schemas("self-test", find(broken, "Deployment", "teamhub"))
    if not failures:
        saved.append("self-test: an unknown Deployment field passed strict validation")
    expecting_failures = False
    for f in saved:
        if f.startswith("self-test:"):
            print(f"FAIL {f}")
    failures = saved


def main():
    binary = sys.argv[1]
    envs = serve_help(binary)
    rendered = {t: render(t) for t in TARGETS}
    template_secret_keys = set()
    for s in find(rendered["base"], "Secret", "teamhub-secrets"):
        template_secret_keys |= set(s.get("stringData", {})) | set(s.get("data", {}))
    for target, docs in rendered.items():
        print(f"== {target}: {len(docs)} objects")
        validate_schemas(target, docs)
        env = check_deployment(target, docs, envs, template_secret_keys)
        probe_paths = set()
        for d in find(docs, "Deployment", "teamhub"):
            c = hub_container(d) or {}
            for probe in PROBE_PATHS:
                if probe in c:
                    probe_paths.add(c[probe]["httpGet"]["path"])
        if env is not None:
            run_binary(target, binary, env, probe_paths)
    check_dashboard_and_docs()
    if "--self-test" in sys.argv:
        self_test(binary, rendered["overlays/dev"], rendered["overlays/prod"], envs, template_secret_keys)
    if failures:
        print(f"\n{len(failures)} k8s check(s) failed")
        sys.exit(1)
    print("\nk8s checks passed")


if __name__ == "__main__":
    main()
