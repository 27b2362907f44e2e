"""The Helm chart in helm/http-nas: lint, render, schemas, promises, refusals, lookup, live test.

1. lint the chart (strict) with the default values and every scenario's values; package it and
   render the archive;
2. render every scenario once (manifests written under target/helm-render/<scenario>/),
   validate each object against the Kubernetes schemas of each version the scenario targets,
   and assert what the chart promises: the common properties of every render, then the
   scenario's own;
3. check that impossible values (replicaCount > 1 or autoscaling on a ReadWriteOnce volume, ...)
   refuse to render, with the explanatory message;
4. render against a fake API server on 127.0.0.1: Helm's `lookup` keeps a 1.x release's claim;
5. run the `helm test` script (files/test-upload.sh, the exact text the test pod runs) against
   the real binary started with the environment the Deployment renders, open and with tokens.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, NamedTuple

import helm_python as helm
import pytest

from chartlib import (CHART, NAMESPACE, RELEASE, ROOT, TEST_SCRIPT, FakeApiServer, Rendered,
                      deep_merge, live_test, note, sets, validate_objects, write_manifests)

# Kubernetes versions the manifests are validated against: the chart's minimum (Chart.yaml
# kubeVersion), 1.30 and a recent one. Scenarios using newer fields raise the minimum.
KUBE_VERSIONS = ["1.25.0", "1.30.0", "1.34.0"]


# --------------------------------------------------------------------------------------------
# Promised properties: a_common for every render, a_<scenario> for each scenario


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
    # Plain listings are bare names (directories too), and curl -sf would hide the server's
    # error messages: the examples use -sS --fail-with-body.
    assert "end in /" not in r.notes and "bare names" in r.notes, "NOTES misdescribes listings"
    assert "-sf" not in r.notes and "--fail-with-body" in r.notes, "NOTES teaches curl -sf"


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
    assert "HTTP_NAS_TOKEN_FILE" not in env and "HTTP_NAS_TOKENS_FILE" not in env
    assert env["HTTP_NAS_ALLOWED_HOSTS"] == ("http-nas,http-nas.storage,http-nas.storage.svc,"
                                             "http-nas.storage.svc.cluster.local"), env
    assert not r.all("ServiceMonitor") and not r.all("HorizontalPodAutoscaler") and not r.all("Ingress")
    assert "http://http-nas.storage.svc.cluster.local:3000" in r.notes, "NOTES lacks the cross-namespace URL"
    assert "nodeSelector" not in r.server_pod()


def a_other_release(r: Rendered) -> None:
    assert r.one("Service")["metadata"]["name"] == "files-http-nas"
    assert r.one("PersistentVolumeClaim")["metadata"]["name"] == "files-http-nas-storage"
    assert r.container()["image"] == "ghcr.io/redactics/http-nas:2", "a numeric --set image.tag"
    hosts = r.env()["HTTP_NAS_ALLOWED_HOSTS"].split(",")
    assert hosts[0] == "files-http-nas" and "files-http-nas.storage.svc.cluster.local" in hosts, hosts


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


def a_dashboard(r: Rendered) -> None:
    # The dashboard itself is checked in test_dashboard.py.
    cm = r.one("ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", cm["metadata"]
    assert f'ConfigMap "{cm["metadata"]["name"]}" for the Grafana sidecar' in r.notes, r.notes
    assert cm["data"]["http-nas.json"].strip() == (CHART / "files" / "dashboard.json").read_text().strip()


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
    assert r.env()["HTTP_NAS_ALLOWED_HOSTS"].split(",")[-1] == "chart-example.local", r.env()


def a_scoped_tokens(r: Rendered) -> None:
    env = r.env()
    assert env["HTTP_NAS_TOKENS_FILE"] == "/var/run/secrets/http-nas-tokens/tokens", env
    assert "HTTP_NAS_TOKEN_FILE" not in env
    vol = {v["name"]: v for v in r.server_pod()["volumes"]}["scoped-tokens"]["secret"]
    assert vol["secretName"] == "team-tokens" and vol["defaultMode"] == 0o440, vol
    assert vol["items"] == [{"key": "tokens.txt", "path": "tokens"}], vol["items"]
    mount = {m["name"]: m for m in r.container()["volumeMounts"]}["scoped-tokens"]
    assert mount["readOnly"] is True and mount["mountPath"] == "/var/run/secrets/http-nas-tokens"
    t = r.test_pod()["spec"]
    tvol = {v["name"]: v for v in t["volumes"]}["scoped-tokens"]["secret"]
    assert tvol == vol, "the test pod must read the same Secret"
    tenv = {e["name"]: e.get("value") for e in t["containers"][0]["env"]}
    assert tenv["HTTP_NAS_TOKENS_FILE"] == env["HTTP_NAS_TOKENS_FILE"], tenv
    # Scoped tokens alone turn authentication on: NOTES says where the tokens are and how to
    # get one, and every curl line carries the token.
    assert 'Secret "team-tokens" (key "tokens.txt"' in r.notes, r.notes
    assert "jsonpath='{.data.tokens\\.txt}'" in r.notes, r.notes
    curls = [line for line in r.notes.splitlines() if line.strip().startswith(("cat ", "printf ", "curl "))
             and "/file/" in line]
    assert curls and all('Authorization: Bearer $TOKEN' in line for line in curls), curls


def a_ingress_scoped_tokens(r: Rendered) -> None:
    r.one("Ingress")
    assert "WITHOUT authentication" not in r.notes, r.notes
    assert "Authorization: Bearer $TOKEN" in r.notes, r.notes


def a_allowed_hosts(r: Rendered) -> None:
    assert r.env()["HTTP_NAS_ALLOWED_HOSTS"] == "nas.example.com,http-nas.storage", r.env()


def a_allowed_hosts_off(r: Rendered) -> None:
    assert "HTTP_NAS_ALLOWED_HOSTS" not in r.env(), r.env()


def a_expire(r: Rendered) -> None:
    # One variable, rules sorted by prefix, as the server's --expire reads them.
    assert r.env()["HTTP_NAS_EXPIRE"] == "runs/=7d,scratch/=12h", r.env()


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


class Scenario(NamedTuple):
    name: str
    values: dict[str, Any]
    release: str
    versions: list[str]
    asserts: Callable[[Rendered], None]


SCENARIOS = [Scenario(*s) for s in [
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
    ("grafana-dashboard", sets("grafanaDashboard.enabled=true",
                               "grafanaDashboard.annotations.grafana_folder=Storage"),
     RELEASE, KUBE_VERSIONS, a_dashboard),
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
    ("ingress-scoped-tokens", sets("ingress.enabled=true,tokensSecret=team-tokens"), RELEASE,
     KUBE_VERSIONS, a_ingress_scoped_tokens),
    ("service-account", sets("serviceAccount.create=true"), RELEASE, KUBE_VERSIONS, a_sa),
    ("scoped-tokens", sets("tokensSecret=team-tokens,tokensSecretKey=tokens.txt"), RELEASE,
     KUBE_VERSIONS, a_scoped_tokens),
    ("allowed-hosts", {"allowedHosts": ["nas.example.com", "{{ .Release.Name }}.{{ .Release.Namespace }}"]},
     RELEASE, KUBE_VERSIONS, a_allowed_hosts),
    ("allowed-hosts-off", {"allowedHosts": []}, RELEASE, KUBE_VERSIONS, a_allowed_hosts_off),
    ("expire", {"expire": {"scratch/": "12h", "runs/": "7d"}}, RELEASE, KUBE_VERSIONS, a_expire),
]]
BY_NAME = {s.name: s for s in SCENARIOS}
SCENARIO_IDS = [s.name for s in SCENARIOS]


# --------------------------------------------------------------------------------------------
# Lint and package


@pytest.mark.parametrize("values", [{}] + [s.values for s in SCENARIOS],
                         ids=["default-values"] + SCENARIO_IDS)
def test_lint(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    bad = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not bad, f"{bad}"


def test_package_then_render_the_archive() -> None:
    archive = Path(helm.package(CHART, destination=ROOT / "target"))
    assert archive.name == "http-nas-2.0.0.tgz", archive.name
    with helm.Chart.load(archive) as packaged:
        names = {f["name"] for f in packaged.files}
        assert {"files/test-upload.sh", "files/dashboard.json", "README.md"} <= names, names
        Rendered(packaged.render({}, name=RELEASE, namespace=NAMESPACE)).test_pod()


# --------------------------------------------------------------------------------------------
# Render each scenario once; validate and assert on that render


@pytest.fixture(scope="session")
def rendered(render: Callable[..., Rendered], defaults: Rendered) -> Callable[[str], Rendered]:
    """rendered(name): the scenario's render, made (and written out) on first use."""
    cache: dict[str, Rendered | helm.HelmError] = {}

    def get(name: str) -> Rendered:
        if name not in cache:
            s = BY_NAME[name]
            try:
                r = defaults if (s.values, s.release) == ({}, RELEASE) else render(s.values, s.release)
            except helm.HelmError as e:
                cache[name] = e
            else:
                write_manifests(name, r)
                cache[name] = r
        r = cache[name]
        if isinstance(r, helm.HelmError):
            pytest.fail(f"scenario {name} does not render: {r}")
        return r
    return get


@pytest.mark.parametrize("name", SCENARIO_IDS)
def test_render(rendered: Callable[[str], Rendered], name: str) -> None:
    r = rendered(name)
    assert r.objects, "no objects rendered"
    print(f"{name}: {len(r.objects)} objects")


@pytest.mark.parametrize("name,version", [(s.name, v) for s in SCENARIOS for v in s.versions],
                         ids=[f"{s.name}-{v}" for s in SCENARIOS for v in s.versions])
def test_validate(rendered: Callable[[str], Rendered], name: str, version: str) -> None:
    """kubernetes-validate --strict of every rendered object against Kubernetes `version`."""
    validate_objects(rendered(name), version)


@pytest.mark.parametrize("name", SCENARIO_IDS)
def test_common_promises(rendered: Callable[[str], Rendered], name: str) -> None:
    a_common(rendered(name))


@pytest.mark.parametrize("name", SCENARIO_IDS,
                         ids=[f"{s.name}-{s.asserts.__name__[2:]}" for s in SCENARIOS])
def test_scenario_promises(rendered: Callable[[str], Rendered], name: str) -> None:
    BY_NAME[name].asserts(rendered(name))


# --------------------------------------------------------------------------------------------
# Values that must refuse to render: (values, substrings the error must contain)


MUST_FAIL = {
    "replicaCount=2 with ReadWriteOnce": (sets("replicaCount=2"),
        ["replicaCount=2 needs a ReadWriteMany volume", "ReadWriteOnce", "EFS", "CephFS", "Filestore", "NFS",
         "not Azure Files"]),
    "replicaCount=2 with ReadWriteOncePod": (sets("replicaCount=2,pvc.accessMode=ReadWriteOncePod"),
        ["needs a ReadWriteMany volume", "ReadWriteOncePod"]),
    "replicaCount=2 with an existing claim, default ReadWriteOnce": (sets("replicaCount=2,pvc.existingClaim=x"),
        ["needs a ReadWriteMany volume"]),
    "autoscaling with ReadWriteOnce": (sets("autoscaling.enabled=true"),
        ["autoscaling.enabled=true needs a ReadWriteMany volume", "EFS", "not Azure Files"]),
    "accessMode ReadOnlyMany": (sets("pvc.accessMode=ReadOnlyMany"), ["ReadOnlyMany cannot work"]),
    "relative storagePath": (sets("storagePath=data"), ["storagePath must be an absolute path"]),
}


@pytest.mark.parametrize("case", list(MUST_FAIL))
def test_refuses_to_render(render: Callable[..., Rendered], case: str) -> None:
    values, wanted = MUST_FAIL[case]
    with pytest.raises(helm.HelmRenderError) as refused:
        render(values)
    message = str(refused.value)
    missing = [w for w in wanted + ["templates/validate.yaml"] if w not in message]
    assert not missing, f"message lacks {missing}: {message}"
    if case == "replicaCount=2 with ReadWriteOnce":
        quoted = "\n".join(f"  > {line}" for line in message.strip().splitlines())
        note(f"the message users get for replicaCount=2 (ReadWriteOnce):\n{quoted}")


# --------------------------------------------------------------------------------------------
# Cluster-aware render (Helm lookup against a fake API server on 127.0.0.1): upgrading a 1.x
# release named other than http-nas keeps its claim http-nas-storage


LOOKUP_CASES = [
    # (release, PVC http-nas-storage owned by, values, expected claim name)
    ("files", "files", {}, "http-nas-storage"),
    ("files", "someone-else", {}, "files-http-nas-storage"),
    ("files", None, {}, "files-http-nas-storage"),
    ("files", "files", sets("pvc.claimName=mine"), "mine"),
    ("files", "files", sets("pvc.existingClaim=theirs"), "theirs"),
]


def _lookup_id(case: tuple[str, str | None, dict[str, Any], str]) -> str:
    release, owner, values, want = case
    owned = f"owned-by-{owner}" if owner else "absent"
    given = ",".join(f"{k}.{kk}={vv}" for k, v in values.items() for kk, vv in v.items()) or "defaults"
    return f"release-{release}-claim-{owned}-{given}-{want}"


@pytest.mark.parametrize("release,owner,values,want", LOOKUP_CASES,
                         ids=[_lookup_id(c) for c in LOOKUP_CASES])
def test_lookup_keeps_1x_claim(chart: Any, release: str, owner: str | None,
                               values: dict[str, Any], want: str) -> None:
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": "http-nas-storage", "namespace": NAMESPACE,
                        "annotations": {"meta.helm.sh/release-name": owner,
                                        "meta.helm.sh/release-namespace": NAMESPACE}}}
    api = FakeApiServer({(NAMESPACE, "http-nas-storage"): pvc} if owner else {})
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


# --------------------------------------------------------------------------------------------
# Live: files/test-upload.sh against the real binary, with the rendered Deployment env


@pytest.mark.parametrize("name,tokens", [
    ("default", None),
    ("token-secret", "plain"),
    ("scoped-tokens", "scoped"),
], ids=["open-service-default-values", "rw-and-ro-tokens-token-secret-values",
        "scoped-tokens-file-values"])
def test_live_helm_test_script(http_nas_bin: Path, rendered: Callable[[str], Rendered],
                               name: str, tokens: str | None) -> None:
    secrets = None
    if tokens == "plain":
        secrets = {"token": "rw-" + os.urandom(16).hex(), "read-token": "ro-" + os.urandom(16).hex()}
    elif tokens == "scoped":
        # A team's scoped token first: the script must pick the unscoped rw line.
        secrets = {"tokens": "\n".join([
            "# teams",
            f"team-a-{os.urandom(8).hex()} rw team-a/",
            f"reader-{os.urandom(8).hex()} ro",
            f"admin-{os.urandom(16).hex()} rw",
        ])}
    live_test(http_nas_bin, rendered(name), secrets)


def readme_tokens_file() -> str:
    """The tokens file the chart README's scoped-tokens example writes, made by its own command."""
    text = (CHART / "README.md").read_text()
    block = re.search(r"```sh\n((?:(?!```).)*?> tokens\.txt)\n", text, re.S)
    assert block, "the chart README has no example writing tokens.txt"
    command = block.group(1)
    if not shutil.which("openssl"):
        command = command.replace("openssl rand -hex 32", "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'")
    with tempfile.TemporaryDirectory(prefix="helm-check-readme-") as tmp:
        subprocess.run(["sh", "-c", command], cwd=tmp, check=True)
        return (Path(tmp) / "tokens.txt").read_text()


@pytest.mark.parametrize("case", ["readme-example", "trailing-comments"])
def test_live_helm_test_script_scoped_tokens_files(http_nas_bin: Path,
                                                   rendered: Callable[[str], Rendered],
                                                   case: str) -> None:
    # The README's example as it is written, and a file whose lines end in `# comment` fields:
    # the comment is not a prefix, and a # inside a token is part of the token.
    if case == "readme-example":
        text = readme_tokens_file()
    else:
        text = "\n".join([
            f"team-a-{os.urandom(8).hex()} rw team-a/   # team A's jobs",
            f"reader-{os.urandom(8).hex()} ro # dashboards",
            f"admin#{os.urandom(16).hex()} rw\t# admin; the # inside the token is part of it",
        ])
    live_test(http_nas_bin, rendered("scoped-tokens"), {"tokens": text})


def test_live_helm_test_script_without_unscoped_rw_token_says_so(
        http_nas_bin: Path, rendered: Callable[[str], Rendered]) -> None:
    text = "\n".join([f"team-a-{os.urandom(8).hex()} rw team-a/  # team A",
                      f"reader-{os.urandom(8).hex()} ro"])
    live_test(http_nas_bin, rendered("scoped-tokens"), {"tokens": text},
              expect_failure="helm test needs an unscoped rw token in the tokens file")
