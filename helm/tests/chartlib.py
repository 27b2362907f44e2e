"""Helpers for the chart tests: rendering, the rendered objects, schema validation, a fake API
server for Helm's `lookup`, and the live run of the `helm test` script against the binary.

No helm binary: helm-python-sdk binds Helm's own Go library (lint + offline render, the same
engine `helm lint` / `helm template` use), kubernetes-validate holds the Kubernetes OpenAPI
schemas (strict mode rejects unknown fields).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "http-nas"
RENDER_DIR = ROOT / "target" / "helm-render"
TEST_SCRIPT = CHART / "files" / "test-upload.sh"

# Custom resources: kubernetes-validate has no schema for them; their shape is asserted instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

RELEASE = "http-nas"
NAMESPACE = "storage"

# Lines for the end of the report (pytest's terminal summary, see conftest.py).
NOTES: list[str] = []


def note(text: str) -> None:
    if text not in NOTES:
        NOTES.append(text)


# --------------------------------------------------------------------------------------------
# Values


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


# --------------------------------------------------------------------------------------------
# Rendered output


class Rendered:
    """One render's output: objects by kind and the NOTES text."""

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
    """An offline `helm install --dry-run` of the chart with these values."""
    return Rendered(chart.render(values, name=release, namespace=NAMESPACE, is_install=True))


def write_manifests(scenario: str, rendered: Rendered) -> None:
    """The scenario's manifests under target/helm-render/<scenario>/, for reading them."""
    out = RENDER_DIR / scenario
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for path, text in rendered.files.items():
        if text.strip():
            target = out / path.split("/templates/", 1)[-1].replace("/", "_")
            target.write_text(text)


def validate_objects(rendered: Rendered, version: str) -> None:
    """kubernetes-validate --strict on every object against one Kubernetes version."""
    errors = []
    for obj, source in zip(rendered.objects, rendered.sources):
        kind, api = obj.get("kind"), obj.get("apiVersion")
        name = f"{source.split('/templates/', 1)[-1]} {kind}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if (api, kind) in CRD_KINDS:
                note(f"{kind} ({api}) is a custom resource: no schema in kubernetes-validate, "
                     f"its fields are asserted instead")
                continue
            errors.append(f"{name}: no schema for {api} {kind} in Kubernetes {version}")
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{name} against {version}: {path}: {e.message}")
    assert not errors, "; ".join(errors)


# --------------------------------------------------------------------------------------------
# Cluster-aware render: a fake Kubernetes API server for Helm's `lookup`


class FakeApiServer:
    """Just enough of a Kubernetes API server on 127.0.0.1 for Helm's `lookup` of PVCs."""

    def __init__(self, pvcs: dict[tuple[str, str], dict[str, Any]]):
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


# --------------------------------------------------------------------------------------------
# Live: the helm test script against the real binary, with the Deployment's rendered env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hosts_refused(port: int, allowed: str | None) -> None:
    """With allowed hosts rendered: each listed name is served, another name is 403 (DNS
    rebinding), probes answer whatever the name."""
    if not allowed:
        return
    import http.client

    def status(host: str, path: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path, headers={"Host": host})
            return conn.getresponse().status
        finally:
            conn.close()

    for host in allowed.split(","):
        assert status(f"{host}:3000", "/file/") != 403, f"listed host {host} refused"
    assert status("rebind.attacker.test:3000", "/file/") == 403, "an unlisted host was served"
    assert status("rebind.attacker.test", "/healthz") == 200, "a probe was refused by host name"


def live_test(binary: Path, rendered: Rendered, tokens: dict[str, str] | None,
              expect_failure: str | None = None) -> None:
    """Start the binary with the rendered env (paths mapped into a temp dir), run the script.

    With `expect_failure`, the script must fail and say that text on stderr."""
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
            # The token Secret's mount and the scoped tokens file's mount both map to `secret`.
            mounts = {"HTTP_NAS_TOKEN_FILE": mount, "HTTP_NAS_READ_TOKEN_FILE": mount,
                      "HTTP_NAS_TOKENS_FILE": mount + "-tokens"}
            for name, mounted in mounts.items():
                if name not in env:
                    continue
                assert env[name].startswith(mounted + "/"), env[name]
                env[name] = str(secret) + env[name][len(mounted):]
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
            print(f"({'busybox sh + applets, as in the curl image' if busybox else 'sh'})")
            out = subprocess.run([shell, str(TEST_SCRIPT)], env=script_env, capture_output=True,
                                 text=True, timeout=120)
            for line in out.stdout.splitlines():
                print(f"| {line}")
            if expect_failure is not None:
                assert out.returncode != 0, "the test script passed, expected it to fail"
                assert expect_failure in out.stderr, f"stderr lacks {expect_failure!r}: {out.stderr}"
                return
            assert out.returncode == 0, f"test script exit {out.returncode}: {out.stderr.strip()}"
            assert re.search(r"^\d+ passed, 0 failed$", out.stdout, re.M), "no summary line"
            hosts_refused(port, env.get("HTTP_NAS_ALLOWED_HOSTS"))
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
# Metrics: what the binary exports on /metrics, for checking the Grafana dashboard's queries

# A capture of the binary's /metrics (`http-nas --listen 127.0.0.1:0 --storage DIR`, then
# `curl http://ADDR/metrics`), used when no binary is given; the live test keeps it current.
METRICS_CAPTURE = Path(__file__).resolve().parent / "metrics-exposition.txt"

SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+\S+$")
LABEL_PAIR = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"')


class Exposition:
    """Prometheus text exposition, parsed: metric families (from `# TYPE`) and, for every sample
    name (a histogram's _bucket/_sum/_count included), its label names and their values."""

    def __init__(self, text: str):
        self.types: dict[str, str] = {}
        self.samples: dict[str, dict[str, set[str]]] = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(maxsplit=3)
                self.types[name] = kind
            elif line and not line.startswith("#"):
                m = SAMPLE.match(line)
                assert m, f"not a sample line: {line!r}"
                labels = self.samples.setdefault(m.group(1), {})
                for key, value in LABEL_PAIR.findall(m.group(2) or ""):
                    labels.setdefault(key, set()).add(value)
        for name in self.samples:
            assert self.family(name), f"sample {name} belongs to no # TYPE family"

    def family(self, sample: str) -> str | None:
        """The family a sample name belongs to: itself, or a histogram/summary's base name."""
        if sample in self.types:
            return sample
        for suffix in ("_bucket", "_sum", "_count"):
            base = sample.removesuffix(suffix)
            if base != sample and self.types.get(base) in ("histogram", "summary"):
                return base
        return None

    def shape(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Sample name -> (family type, sorted label names): what a capture must agree on."""
        return {name: (self.types[self.family(name) or name], tuple(sorted(labels)))
                for name, labels in self.samples.items()}


def scrape_metrics(binary: Path) -> str:
    """Start the binary on an ephemeral loopback port against an empty temp root, read the bound
    address from its `listening on ADDR` log line, fetch /metrics, stop it."""
    with tempfile.TemporaryDirectory(prefix="helm-check-metrics-") as tmp:
        storage = Path(tmp) / "storage"
        storage.mkdir()
        log = open(Path(tmp) / "server.log", "w+")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "info"}
        proc = subprocess.Popen([str(binary), "--listen", "127.0.0.1:0", "--storage", str(storage)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 15
            while True:
                log.seek(0)
                m = re.search(r"listening on (\S+)", log.read())
                if m:
                    addr = m.group(1)
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise AssertionError(f"http-nas did not start listening:\n{log.read()}")
                time.sleep(0.05)
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"http://{addr}/metrics", timeout=5) as resp:
                assert resp.status == 200, resp.status
                return resp.read().decode()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
