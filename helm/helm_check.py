#!/usr/bin/env python3
"""Checks of the http-nas Helm chart, run by .ci/helm-check inside its venv.

No helm binary: helm-python-sdk binds Helm's own Go library (lint + offline render, the same
engine `helm lint` / `helm template` use), kubernetes-validate holds the Kubernetes OpenAPI
schemas (strict mode rejects unknown fields).

1. lint the chart (strict) with the default values and every scenario's values;
2. render every scenario, write the manifests under target/helm-render/<scenario>/, validate
   each object against the Kubernetes schemas, and assert what the chart promises;
3. check that impossible values (replicaCount > 1 or autoscaling on a ReadWriteOnce volume, ...)
   refuse to render, with the explanatory message;
4. run the `helm test` script (files/test-upload.sh, the exact text the test pod runs) against
   the real binary started with the environment the Deployment renders, open and with tokens.

Exit status 0 only when everything passed.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "http-nas"
RENDER_DIR = ROOT / "target" / "helm-render"
TEST_SCRIPT = CHART / "files" / "test-upload.sh"

# Kubernetes versions the manifests are validated against: the chart's minimum (Chart.yaml
# kubeVersion) and a recent one. Scenarios using newer fields raise the minimum.
KUBE_VERSIONS = ["1.25.0", "1.34.0"]
# Custom resources: kubernetes-validate has no schema for them; their shape is asserted below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

RELEASE = "http-nas"
NAMESPACE = "storage"

results: list[tuple[str, bool, str]] = []


def record(name: str, ok: bool, detail: str = "") -> None:
    results.append((name, ok, detail))
    mark = "PASS" if ok else "FAIL"
    print(f"  [{mark}] {name}" + (f": {detail}" if detail and not ok else ""))


def check(name: str, fn: Callable[[], Any]) -> None:
    """Run one check; an AssertionError or any exception is a failure with its message."""
    try:
        fn()
        record(name, True)
    except AssertionError as e:
        record(name, False, str(e) or "assertion failed")
    except Exception as e:  # noqa: BLE001 - a check must never abort the run
        record(name, False, f"{type(e).__name__}: {e}")


# --------------------------------------------------------------------------------------------
# Rendering helpers


def sets(*expressions: str) -> dict[str, Any]:
    """Values from `--set` expressions, parsed by Helm's own strvals parser, merged in order."""
    merged: dict[str, Any] = {}
    for expr in expressions:
        deep_merge(merged, helm.parse_set_string(expr))
    return merged


def deep_merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = value
    return into


class Rendered:
    """One scenario's rendered output: objects by kind and the NOTES text."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.notes = ""
        self.objects: list[dict[str, Any]] = []
        self.sources: list[str] = []
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.objects.append(doc)
                    self.sources.append(path)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
        return found[0]

    def server_pod(self) -> dict[str, Any]:
        return self.one("Deployment")["spec"]["template"]["spec"]

    def container(self) -> dict[str, Any]:
        return self.server_pod()["containers"][0]

    def env(self) -> dict[str, str]:
        return {e["name"]: e.get("value") for e in self.container().get("env", [])}

    def test_pod(self) -> dict[str, Any]:
        pods = [p for p in self.all("Pod")
                if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
        assert len(pods) == 1, f"expected one helm test pod, found {len(pods)}"
        return pods[0]


def render(chart: helm.Chart, values: dict[str, Any], release: str = RELEASE) -> Rendered:
    return Rendered(chart.render(values, name=release, namespace=NAMESPACE, is_install=True))


def write_manifests(scenario: str, rendered: Rendered) -> None:
    out = RENDER_DIR / scenario
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for path, text in rendered.files.items():
        if text.strip():
            target = out / path.split("/templates/", 1)[-1].replace("/", "_")
            target.write_text(text)


def validate_objects(rendered: Rendered, versions: list[str]) -> list[str]:
    """kubernetes-validate --strict on every object; returns notes about skipped CRD kinds."""
    notes = []
    errors = []
    for obj, source in zip(rendered.objects, rendered.sources):
        kind, api = obj.get("kind"), obj.get("apiVersion")
        name = f"{source.split('/templates/', 1)[-1]} {kind}/{obj.get('metadata', {}).get('name')}"
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                if (api, kind) in CRD_KINDS:
                    notes.append(f"{kind} ({api}) is a custom resource: no schema in "
                                 f"kubernetes-validate, its fields are asserted instead")
                    break
                errors.append(f"{name}: no schema for {api} {kind} in Kubernetes {version}")
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{name} against {version}: {path}: {e.message}")
    assert not errors, "; ".join(errors)
    return sorted(set(notes))


# --------------------------------------------------------------------------------------------
# Scenarios: name -> (values, minimum Kubernetes versions to validate against, extra asserts)


def a_common(r: Rendered) -> None:
    """What every successful render must satisfy."""
    c = r.container()
    pod = r.server_pod()
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, c["livenessProbe"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, c["readinessProbe"]
    assert c["ports"][0]["name"] == "http"
    env = r.env()
    shutdown = int(env["HTTP_NAS_SHUTDOWN_TIMEOUT"])
    pre_stop = int(c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0))
    grace = int(pod["terminationGracePeriodSeconds"])
    assert grace >= shutdown + pre_stop, (
        f"terminationGracePeriodSeconds {grace} < shutdown timeout {shutdown} + preStop {pre_stop}")
    storage = env["STORAGE_PATH"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["storage"] == storage, f"volume mounted at {mounts['storage']}, STORAGE_PATH={storage}"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "cpu" not in c.get("resources", {}).get("limits", {}), "no CPU limit by design"
    assert pod["enableServiceLinks"] is False
    svc = r.one("Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert svc["spec"]["selector"] == r.one("Deployment")["spec"]["selector"]["matchLabels"]
    # The helm test pod runs exactly files/test-upload.sh against this Service, and is not
    # itself selected by it.
    t = r.test_pod()
    sel = svc["spec"]["selector"]
    assert not all(t["metadata"]["labels"].get(k) == v for k, v in sel.items()), "Service selects the test pod"
    tc = t["spec"]["containers"][0]
    assert tc["command"][-1].strip() == TEST_SCRIPT.read_text().strip(), "test pod script != files/test-upload.sh"
    url = {e["name"]: e.get("value") for e in tc["env"]}["HTTP_NAS_URL"]
    assert url == f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}", url
    assert re.fullmatch(r"curlimages/curl:\d+\.\d+\.\d+", tc["image"]), f"test image not pinned: {tc['image']}"
    assert "helm test" in r.notes and "/file/" in r.notes, "NOTES lacks the usage examples"


def a_default(r: Rendered) -> None:
    svc = r.one("Service")
    assert svc["metadata"]["name"] == "http-nas", f"Service is {svc['metadata']['name']!r}, want 'http-nas'"
    assert svc["spec"]["ports"][0]["port"] == 3000
    d = r.one("Deployment")
    assert d["spec"]["replicas"] == 1
    assert d["spec"]["strategy"] == {"type": "Recreate", "rollingUpdate": None}, d["spec"]["strategy"]
    pvc = r.one("PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "http-nas-storage", pvc["metadata"]["name"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in pvc["spec"], "unset storageClass must leave the cluster default"
    assert r.server_pod()["volumes"][0]["persistentVolumeClaim"]["claimName"] == "http-nas-storage"
    assert r.container()["image"] == "ghcr.io/redactics/http-nas:0.1.0", r.container()["image"]
    assert r.container()["imagePullPolicy"] == "IfNotPresent"
    psc = r.server_pod()["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]) == (65532, 65532, 65532), psc
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    env = r.env()
    assert env["STORAGE_PATH"] == "/mnt/storage" and env["HTTP_NAS_LISTEN"] == "0.0.0.0:3000", env
    assert "HTTP_NAS_TOKEN_FILE" not in env
    assert not r.all("ServiceMonitor") and not r.all("HorizontalPodAutoscaler") and not r.all("Ingress")
    assert "http://http-nas.storage.svc.cluster.local:3000" in r.notes, "NOTES lacks the cross-namespace URL"
    assert "nodeSelector" not in r.server_pod()


def a_other_release(r: Rendered) -> None:
    assert r.one("Service")["metadata"]["name"] == "files-http-nas"
    assert r.one("PersistentVolumeClaim")["metadata"]["name"] == "files-http-nas-storage"
    assert r.container()["image"] == "ghcr.io/redactics/http-nas:2", "a numeric --set image.tag"


def a_debug_image(r: Rendered) -> None:
    assert r.container()["image"] == "ghcr.io/redactics/http-nas:0.1.0-debug", r.container()["image"]


def a_token(r: Rendered) -> None:
    env = r.env()
    assert env["HTTP_NAS_TOKEN_FILE"] == "/var/run/secrets/http-nas/token", env
    assert env["HTTP_NAS_READ_TOKEN_FILE"] == "/var/run/secrets/http-nas/read-token", env
    vol = {v["name"]: v for v in r.server_pod()["volumes"]}["auth"]["secret"]
    assert vol["secretName"] == "nas-tokens" and vol["defaultMode"] == 0o440, vol
    assert vol["items"] == [{"key": "rw", "path": "token"}, {"key": "ro", "path": "read-token"}], vol["items"]
    mount = {m["name"]: m for m in r.container()["volumeMounts"]}["auth"]
    assert mount["readOnly"] is True
    t = r.test_pod()["spec"]
    tvol = {v["name"]: v for v in t["volumes"]}["auth"]["secret"]
    assert tvol["secretName"] == vol["secretName"] and tvol["items"] == vol["items"], "test pod must read the same Secret"
    tenv = {e["name"]: e.get("value") for e in t["containers"][0]["env"]}
    assert tenv["HTTP_NAS_TOKEN_FILE"].startswith("/var/run/secrets/http-nas/"), tenv
    assert 'Authorization: Bearer $TOKEN' in r.notes, "NOTES lacks the token header"


def a_existing_claim(r: Rendered) -> None:
    assert not r.all("PersistentVolumeClaim"), "existingClaim must not create a PVC"
    assert r.server_pod()["volumes"][0]["persistentVolumeClaim"]["claimName"] == "team-data"


def a_storage_class(r: Rendered) -> None:
    assert r.one("PersistentVolumeClaim")["spec"]["storageClassName"] == "fast-ssd"


def a_storage_class_dash(r: Rendered) -> None:
    spec = r.one("PersistentVolumeClaim")["spec"]
    assert "storageClassName" in spec and spec["storageClassName"] == "", spec


def a_rwx(r: Rendered) -> None:
    d = r.one("Deployment")
    assert d["spec"]["replicas"] == 3
    assert d["spec"]["strategy"]["type"] == "RollingUpdate", d["spec"]["strategy"]
    assert r.one("PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    assert r.one("PersistentVolumeClaim")["spec"]["storageClassName"] == "efs-sc"
    assert r.container()["lifecycle"]["preStop"]["sleep"]["seconds"] == 5
    assert r.server_pod()["terminationGracePeriodSeconds"] == 25 + 5 + 5


def a_rwx_hpa(r: Rendered) -> None:
    assert "replicas" not in r.one("Deployment")["spec"], "with an HPA the Deployment must not set replicas"
    hpa = r.one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == r.one("Deployment")["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)


def a_seed(r: Rendered) -> None:
    """The 1.x README's install command: --set pvc.size=10Gi --set storagePath=..."""
    assert r.one("PersistentVolumeClaim")["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert r.env()["STORAGE_PATH"] == "/data"
    assert r.one("Service")["metadata"]["name"] == "http-nas"


def a_seed_values(r: Rendered) -> None:
    """A complete 1.x values file (its keys and defaults) still renders and means the same."""
    assert r.container()["image"] == "redactics/http-nas:1.3.0", r.container()["image"]
    assert r.container()["imagePullPolicy"] == "Always"
    psc = r.server_pod()["securityContext"]
    assert psc["fsGroup"] == 2000, psc
    assert r.container()["securityContext"]["runAsUser"] == 2000
    assert r.one("PersistentVolumeClaim")["metadata"]["name"] == "http-nas-storage"
    assert r.server_pod()["nodeSelector"] == {"pool": "storage"}, "global.nodeSelector (read by 1.x) ignored"


def a_monitor(r: Rendered) -> None:
    sm = r.one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    ep = sm["spec"]["endpoints"][0]
    assert ep["port"] == "http" and ep["path"] == "/metrics", ep
    assert sm["spec"]["selector"]["matchLabels"] == r.one("Service")["spec"]["selector"]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    ann = r.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "3000", ann


def a_placement(r: Rendered) -> None:
    pod = r.server_pod()
    assert pod["nodeSelector"] == {"disktype": "ssd", "zone": "a"}, pod.get("nodeSelector")
    assert pod["tolerations"][0]["key"] == "storage-only"
    assert pod["priorityClassName"] == "high"
    labels = r.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "data"
    assert r.one("Deployment")["spec"]["template"]["metadata"]["annotations"]["example.com/a"] == "b"
    assert r.test_pod()["spec"]["nodeSelector"] == pod["nodeSelector"]
    assert r.env()["HTTP_NAS_MAX_BODY"] == "10737418240", r.env()["HTTP_NAS_MAX_BODY"]
    assert r.env()["HTTP_NAS_FSYNC"] == "false", r.env()["HTTP_NAS_FSYNC"]


def a_ingress(r: Rendered) -> None:
    ing = r.one("Ingress")
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "http-nas", "port": {"number": 3000}}, backend
    assert "WITHOUT authentication" in r.notes


def a_sa(r: Rendered) -> None:
    sa = r.one("ServiceAccount")
    assert r.server_pod()["serviceAccountName"] == sa["metadata"]["name"] == "http-nas"


SEED_VALUES_1X = {
    # The 1.x chart's values.yaml, as a user's copy of it would be passed with -f.
    "replicaCount": 1,
    "storagePath": "/mnt/storage",
    "image": {"registry": "redactics", "repository": "http-nas", "pullPolicy": "Always", "tag": "1.3.0"},
    "pvc": {"claimName": "http-nas-storage", "size": "1Gi"},
    "imagePullSecrets": [],
    "nameOverride": "",
    "fullnameOverride": "",
    "serviceAccount": {"create": False, "annotations": {}, "name": ""},
    "podAnnotations": {},
    "podSecurityContext": {"fsGroup": 2000},
    "securityContext": {"runAsNonRoot": True, "runAsUser": 2000},
    "service": {"type": "ClusterIP", "port": 3000},
    "ingress": {"enabled": False, "className": "", "annotations": {},
                "hosts": [{"host": "chart-example.local",
                           "paths": [{"path": "/", "pathType": "ImplementationSpecific"}]}],
                "tls": []},
    "resources": {},
    "autoscaling": {"enabled": False, "minReplicas": 1, "maxReplicas": 100,
                    "targetCPUUtilizationPercentage": 80},
    "nodeSelector": {},
    "tolerations": [],
    "affinity": {},
    "global": {"nodeSelector": {"pool": "storage"}},
}

SCENARIOS: list[tuple[str, dict[str, Any], str, list[str], Callable[[Rendered], None]]] = [
    # name, values, release name, kube versions, asserts
    ("default", {}, RELEASE, KUBE_VERSIONS, a_default),
    ("other-release-name", sets("image.tag=2"), "files", KUBE_VERSIONS, a_other_release),
    ("debug-image", sets("image.debug=true"), RELEASE, KUBE_VERSIONS, a_debug_image),
    ("token-secret", sets("auth.existingSecret=nas-tokens,auth.tokenKey=rw,auth.readTokenKey=ro"),
     RELEASE, KUBE_VERSIONS, a_token),
    ("existing-claim", sets("pvc.existingClaim=team-data"), RELEASE, KUBE_VERSIONS, a_existing_claim),
    ("storage-class", sets("pvc.storageClass=fast-ssd"), RELEASE, KUBE_VERSIONS, a_storage_class),
    ("storage-class-dash", sets("pvc.storageClass=-"), RELEASE, KUBE_VERSIONS, a_storage_class_dash),
    # lifecycle.preStop.sleep exists from Kubernetes 1.30 on.
    ("rwx-3-replicas", sets("replicaCount=3,pvc.accessMode=ReadWriteMany,pvc.storageClass=efs-sc",
                            "server.preStopSleepSeconds=5"), RELEASE, ["1.30.0", "1.34.0"], a_rwx),
    ("rwx-autoscaling", sets("pvc.accessMode=ReadWriteMany,autoscaling.enabled=true",
                             "autoscaling.minReplicas=2,autoscaling.maxReplicas=5"),
     RELEASE, KUBE_VERSIONS, a_rwx_hpa),
    ("seed-set-flags", sets("pvc.size=10Gi", "storagePath=/data"), RELEASE, KUBE_VERSIONS, a_seed),
    ("seed-1x-values-file", SEED_VALUES_1X, RELEASE, KUBE_VERSIONS, a_seed_values),
    ("servicemonitor", sets("metrics.serviceMonitor.enabled=true",
                            "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
                            "metrics.podAnnotations=true"), RELEASE, KUBE_VERSIONS, a_monitor),
    ("placement", deep_merge(sets("nodeSelector.disktype=ssd,global.nodeSelector.zone=a",
                                  "global.nodeSelector.disktype=hdd,priorityClassName=high",
                                  "podLabels.team=data"),
                             {"tolerations": [{"key": "storage-only", "operator": "Exists",
                                               "effect": "NoSchedule"}],
                              "podAnnotations": {"example.com/a": "b"},
                              # a 10 GiB limit from a values file (a float in Go's JSON decoding)
                              "server": {"maxBody": 10737418240, "fsync": False}}),
     RELEASE, KUBE_VERSIONS, a_placement),
    ("ingress", sets("ingress.enabled=true,ingress.className=nginx"), RELEASE, KUBE_VERSIONS, a_ingress),
    ("service-account", sets("serviceAccount.create=true"), RELEASE, KUBE_VERSIONS, a_sa),
]

# Values that must not render: (name, values, substrings the error must contain).
MUST_FAIL = [
    ("replicaCount=2 with ReadWriteOnce", sets("replicaCount=2"),
     ["replicaCount=2 needs a ReadWriteMany volume", "ReadWriteOnce", "EFS", "CephFS", "Filestore", "NFS"]),
    ("replicaCount=2 with ReadWriteOncePod", sets("replicaCount=2,pvc.accessMode=ReadWriteOncePod"),
     ["needs a ReadWriteMany volume", "ReadWriteOncePod"]),
    ("replicaCount=2 with an existing claim, default ReadWriteOnce", sets("replicaCount=2,pvc.existingClaim=x"),
     ["needs a ReadWriteMany volume"]),
    ("autoscaling with ReadWriteOnce", sets("autoscaling.enabled=true"),
     ["autoscaling.enabled=true needs a ReadWriteMany volume", "EFS"]),
    ("accessMode ReadOnlyMany", sets("pvc.accessMode=ReadOnlyMany"), ["ReadOnlyMany cannot work"]),
    ("relative storagePath", sets("storagePath=data"), ["storagePath must be an absolute path"]),
]


# --------------------------------------------------------------------------------------------
# Cluster-aware render: the 1.x claim name is kept for a release that already owns it


class FakeApiServer:
    """Just enough of a Kubernetes API server on 127.0.0.1 for Helm's `lookup` of PVCs."""

    def __init__(self, pvcs: dict[tuple[str, str], dict[str, Any]]):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, code: int, obj: dict[str, Any]) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0].strip("/").split("/")
                if path == ["api", "v1"]:
                    return self.reply(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                        {"name": "persistentvolumeclaims", "singularName": "persistentvolumeclaim",
                         "namespaced": True, "kind": "PersistentVolumeClaim", "verbs": ["get", "list"]}]})
                if path == ["api"]:
                    return self.reply(200, {"kind": "APIVersions", "versions": ["v1"],
                                            "serverAddressByClientCIDRs": []})
                if path == ["apis"]:
                    return self.reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
                if (len(path) == 6 and path[:3] == ["api", "v1", "namespaces"]
                        and path[4] == "persistentvolumeclaims" and (path[3], path[5]) in pvcs):
                    return self.reply(200, pvcs[(path[3], path[5])])
                return self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "NotFound", "code": 404, "message": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        port = self.server.server_address[1]
        self.kubeconfig = f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: helm-check, user: {{token: not-a-secret}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: helm-check, namespace: {NAMESPACE}}}}}]
current-context: fake
"""

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def legacy_claim_checks(chart: helm.Chart) -> None:
    """Upgrading a 1.x release named other than http-nas keeps its claim http-nas-storage."""
    def pvc(owner: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "http-nas-storage", "namespace": NAMESPACE,
                             "annotations": {"meta.helm.sh/release-name": owner,
                                             "meta.helm.sh/release-namespace": NAMESPACE}}}
    cases = [
        # (release, PVC http-nas-storage owned by, values, expected claim name)
        ("files", "files", {}, "http-nas-storage"),
        ("files", "someone-else", {}, "files-http-nas-storage"),
        ("files", None, {}, "files-http-nas-storage"),
        ("files", "files", sets("pvc.claimName=mine"), "mine"),
        ("files", "files", sets("pvc.existingClaim=theirs"), "theirs"),
    ]
    for release, owner, values, want in cases:
        def run(release: str = release, owner: str | None = owner, values: dict[str, Any] = values,
                want: str = want) -> None:
            api = FakeApiServer({(NAMESPACE, "http-nas-storage"): pvc(owner)} if owner else {})
            try:
                with helm.Config(kubeconfig_content=api.kubeconfig, namespace=NAMESPACE) as cfg:
                    r = Rendered(cfg.render(chart, values, name=release, namespace=NAMESPACE,
                                            is_upgrade=True))
            finally:
                api.close()
            claim = r.server_pod()["volumes"][0]["persistentVolumeClaim"]["claimName"]
            assert claim == want, f"claimName {claim!r}, want {want!r}"
            created = [p["metadata"]["name"] for p in r.all("PersistentVolumeClaim")]
            assert created == ([] if "existingClaim" in values.get("pvc", {}) else [want]), created
        owned = f"owned by release {owner!r}" if owner else "absent"
        check(f"lookup: release {release!r}, http-nas-storage {owned}, {values or 'defaults'} -> {want}", run)


# --------------------------------------------------------------------------------------------
# Live: the helm test script against the real binary, with the Deployment's rendered env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_test(binary: Path, rendered: Rendered, tokens: dict[str, str] | None) -> None:
    """Start the binary with the rendered env (paths mapped into a temp dir), run the script."""
    with tempfile.TemporaryDirectory(prefix="helm-check-live-") as tmp:
        tmpdir = Path(tmp)
        storage = tmpdir / "storage"
        storage.mkdir()
        port = free_port()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        mount = "/var/run/secrets/http-nas"
        for name, value in rendered.env().items():
            assert value is not None, f"env {name} has no value"
            env[name] = value
        assert env["HTTP_NAS_LISTEN"].endswith(":3000")
        env["HTTP_NAS_LISTEN"] = f"127.0.0.1:{port}"
        env["STORAGE_PATH"] = str(storage)
        script_env = {"PATH": env["PATH"], "HTTP_NAS_URL": f"http://127.0.0.1:{port}",
                      "TMPDIR": str(tmpdir)}
        if tokens:
            secret = tmpdir / "secret"
            secret.mkdir()
            for path, token in tokens.items():
                (secret / path).write_text(token + "\n")  # a trailing newline, as files often have
            for name in ("HTTP_NAS_TOKEN_FILE", "HTTP_NAS_READ_TOKEN_FILE"):
                assert env[name].startswith(mount + "/"), env[name]
                env[name] = str(secret) + env[name][len(mount):]
                script_env[name] = env[name]
        log = open(tmpdir / "server.log", "w+")
        proc = subprocess.Popen([str(binary)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    # No proxy: the server is on the loopback interface.
                    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                    with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise AssertionError(f"server did not come up: {log.read()[-2000:]}")
                time.sleep(0.1)
            # With busybox at hand, run the script as in the curl image: busybox sh and applets
            # only, plus curl.
            busybox = shutil.which("busybox")
            if busybox:
                tools = tmpdir / "busybox-bin"
                tools.mkdir()
                for applet in ("sh", "cat", "cmp", "grep", "head", "mktemp", "od", "rm", "tee",
                               "tr", "wc"):
                    (tools / applet).symlink_to(busybox)
                (tools / "curl").symlink_to(shutil.which("curl") or "curl")
                script_env["PATH"] = str(tools)
            shell = str(tmpdir / "busybox-bin" / "sh") if busybox else "sh"
            print(f"      ({'busybox sh + applets, as in the curl image' if busybox else 'sh'})")
            out = subprocess.run([shell, str(TEST_SCRIPT)], env=script_env, capture_output=True,
                                 text=True, timeout=120)
            for line in out.stdout.splitlines():
                print(f"      | {line}")
            assert out.returncode == 0, f"test script exit {out.returncode}: {out.stderr.strip()}"
            assert re.search(r"^\d+ passed, 0 failed$", out.stdout, re.M), "no summary line"
            left = [p.name for p in storage.iterdir()]
            assert not left, f"the test left files behind: {left}"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("server did not stop within 30 s of SIGTERM")
            log.close()
        assert code == 0, f"server exited {code} after SIGTERM"


# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", help="http-nas binary for the live test; none = skip it")
    args = parser.parse_args()

    # The Go library logs through its own default logger; keep its INFO lines out of the report.
    quiet = logging.getLogger("helm-check-native")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    helm.enable_logging(logging.ERROR, quiet)

    print(f"helm-python-sdk {helm.__version__} (Helm Go SDK {helm.helm_sdk_version()}), "
          f"kubernetes-validate {kubernetes_validate.__version__}")
    notes: set[str] = set()

    print("\n== lint (strict)")
    lint_cases = [("default values", {})] + [(name, values) for name, values, *_ in SCENARIOS]
    for name, values in lint_cases:
        def do_lint(values: dict[str, Any] = values) -> None:
            report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
            bad = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
            assert not bad, f"{bad}"
        check(f"lint: {name}", do_lint)

    print("\n== package")

    def do_package() -> None:
        archive = Path(helm.package(CHART, destination=ROOT / "target"))
        assert archive.name == "http-nas-2.0.0.tgz", archive.name
        with helm.Chart.load(archive) as packaged:
            names = {f["name"] for f in packaged.files}
            assert "files/test-upload.sh" in names and "README.md" in names, names
            Rendered(packaged.render({}, name=RELEASE, namespace=NAMESPACE)).test_pod()
        print(f"    {archive.relative_to(ROOT)}")
    check("helm package, then render the archive", do_package)

    print("\n== render + kubernetes-validate --strict + asserts")
    shutil.rmtree(RENDER_DIR, ignore_errors=True)
    RENDER_DIR.mkdir(parents=True)
    rendered_by_name: dict[str, Rendered] = {}
    with helm.Chart.load(CHART) as chart:
        for name, values, release, versions, asserts in SCENARIOS:
            try:
                r = render(chart, values, release)
            except helm.HelmError as e:
                record(f"render: {name}", False, str(e))
                continue
            record(f"render: {name} ({len(r.objects)} objects)", True)
            rendered_by_name[name] = r
            write_manifests(name, r)

            def do_validate(r: Rendered = r, versions: list[str] = versions) -> None:
                notes.update(validate_objects(r, versions))
            check(f"validate: {name} against Kubernetes {', '.join(versions)}", do_validate)
            check(f"asserts: {name} (common)", lambda r=r: a_common(r))
            check(f"asserts: {name} ({asserts.__name__[2:].replace('_', ' ')})",
                  lambda r=r, asserts=asserts: asserts(r))

        print("\n== values that must refuse to render")
        for name, values, wanted in MUST_FAIL:
            def do_fail(values: dict[str, Any] = values, wanted: list[str] = wanted) -> None:
                try:
                    chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
                except helm.HelmRenderError as e:
                    wanted = wanted + ["templates/validate.yaml"]
                    missing = [w for w in wanted if w not in str(e)]
                    assert not missing, f"message lacks {missing}: {e}"
                    return
                raise AssertionError("rendered, but must fail")
            check(f"refused: {name}", do_fail)
        try:
            chart.render(sets("replicaCount=2"), name=RELEASE, namespace=NAMESPACE)
        except helm.HelmRenderError as e:
            print("    the message users get for replicaCount=2 (ReadWriteOnce):")
            for line in str(e).strip().splitlines():
                print(f"      > {line}")

        print("\n== cluster-aware render (Helm lookup against a fake API server on 127.0.0.1)")
        legacy_claim_checks(chart)

    print("\n== helm test script against the real binary (rendered Deployment env)")
    if args.binary:
        binary = Path(args.binary)
        if "default" in rendered_by_name:
            check("live: open service (default values)",
                  lambda: live_test(binary, rendered_by_name["default"], None))
        if "token-secret" in rendered_by_name:
            check("live: read-write + read-only tokens (token-secret values)",
                  lambda: live_test(binary, rendered_by_name["token-secret"],
                                    {"token": "rw-" + os.urandom(16).hex(),
                                     "read-token": "ro-" + os.urandom(16).hex()}))
    else:
        print("  [SKIP] no http-nas binary given (--binary)")

    print("\n== the kubernetes-validate command line over the written files")

    def do_cli() -> None:
        files = sorted(str(p.relative_to(ROOT)) for p in RENDER_DIR.glob("*/*.yaml"))
        assert files, "no rendered manifests were written"
        cli = Path(sys.executable).parent / "kubernetes-validate"
        versions = [arg for v in ("1.30.0", "1.34.0") for arg in ("-k", v)]
        out = subprocess.run([str(cli), "--strict", "--quiet", *versions, *files], cwd=ROOT,
                             capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() + out.stderr.splitlines() if ln.strip()]
        # ServiceMonitor, a custom resource, has no schema there: that WARN is expected.
        unexpected = [ln for ln in lines if not ("WARN" in ln and "ServiceMonitor" in ln)]
        assert out.returncode == 0 and not unexpected, "\n".join(lines)
        print(f"    {len(files)} files, Kubernetes 1.30 and 1.34")
    check("kubernetes-validate --strict -k 1.30.0 -k 1.34.0 target/helm-render/*/*.yaml", do_cli)

    for note in sorted(notes):
        print(f"\nnote: {note}")
    passed = sum(1 for _, ok, _ in results if ok)
    failed = [(n, d) for n, ok, d in results if not ok]
    print(f"\nrendered manifests: {RENDER_DIR.relative_to(ROOT)}/<scenario>/")
    if failed:
        print("\nFailures:")
        for n, d in failed:
            print(f"  - {n}: {d}")
    print(f"\nhelm-check: {passed} passed, {len(failed)} failed")  # the last line, for CI
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        sys.exit(2)
