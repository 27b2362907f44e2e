"""The Grafana dashboard (grafanaDashboard.*, files/dashboard.json) and the metrics it queries.

- off by default; when enabled, one ConfigMap with the sidecar's label whose data is the file,
  valid JSON;
- the dashboard's shape: stable uid and title, a Prometheus `${datasource}` variable that every
  panel and query uses, namespace/job/pod filter variables every selector applies, unique ids;
- every PromQL expression (panels and variables) names only metrics the binary exports, with
  only labels those metrics carry (or that Prometheus adds to every target), and label values
  the binary emits; every exported metric has a panel. The exported metrics come from the real
  binary (started on 127.0.0.1, /metrics fetched) when one is given (.ci/helm-check builds it),
  else from the capture helm/tests/metrics-exposition.txt, which the live test compares with the
  binary.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from chartlib import (CHART, METRICS_CAPTURE, NAMESPACE, Exposition, Rendered, note,
                      scrape_metrics, sets, validate_objects)

DASHBOARD_FILE = CHART / "files" / "dashboard.json"
DASHBOARD = json.loads(DASHBOARD_FILE.read_text())
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# The filter variables, and the matcher each metric selector must carry for them.
FILTERS = {"namespace": 'namespace=~"$namespace"', "job": 'job=~"$job"', "pod": 'pod=~"$pod"'}
# Labels Prometheus attaches to every scraped series (the ServiceMonitor's and the usual
# kubernetes_sd relabelling of annotated pods), not exported by the binary itself.
TARGET_LABELS = {"job", "instance", "namespace", "pod"}


# --------------------------------------------------------------------------------------------
# The metrics the binary exports


@pytest.fixture(scope="session")
def exported(request: pytest.FixtureRequest) -> Exposition:
    """The real binary's /metrics when a binary is given, else the capture."""
    path = request.config.getoption("--http-nas-bin")
    if path:
        return Exposition(scrape_metrics(Path(path).resolve()))
    note("dashboard queries checked against helm/tests/metrics-exposition.txt (no binary given)")
    return Exposition(METRICS_CAPTURE.read_text())


def test_capture_matches_the_binary(http_nas_bin: Path) -> None:
    live = Exposition(scrape_metrics(http_nas_bin)).shape()
    captured = Exposition(METRICS_CAPTURE.read_text()).shape()
    assert live == captured, (
        "helm/tests/metrics-exposition.txt differs from the binary's /metrics; capture it again "
        "(target/debug/http-nas --listen 127.0.0.1:0 --storage DIR; curl http://ADDR/metrics) and "
        f"update files/dashboard.json for new metrics.\nonly live: "
        f"{sorted(set(live.items()) - set(captured.items()))}\nonly captured: "
        f"{sorted(set(captured.items()) - set(live.items()))}")


# --------------------------------------------------------------------------------------------
# PromQL, as far as the dashboard uses it

SELECTOR = re.compile(r'([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}')
MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
GROUPING = re.compile(r'\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)')
IDENT = re.compile(r'(?<![\w.$:])([a-zA-Z_:][\w:]*)')
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan"}


def parse_promql(expr: str) -> tuple[list[tuple[str, dict[str, tuple[str, str]]]], list[str], list[str]]:
    """(selectors as (metric, {label: (op, value)}), grouping label names, problems) of an
    expression. Every metric reference must be a selector or a bare name; a selector without a
    metric name ({__name__=~...}) is a problem, as it escapes the check."""
    problems: list[str] = []
    selectors: list[tuple[str, dict[str, tuple[str, str]]]] = []
    rest = expr
    for m in SELECTOR.finditer(expr):
        name, body = m.group(1), m.group(2)
        matchers: dict[str, tuple[str, str]] = {}
        pos = 0
        while pos < len(body.strip()):
            mm = MATCHER.match(body, pos)
            if not mm:
                problems.append(f"cannot parse matchers {{{body}}}")
                break
            matchers[mm.group(1)] = (mm.group(2), mm.group(3))
            pos = mm.end()
        if not name:
            problems.append(f"selector without a metric name: {m.group(0)}")
        else:
            selectors.append((name, matchers))
    rest = SELECTOR.sub(lambda m: (m.group(1) or "") + " ", rest)
    grouping = [label.strip() for g in GROUPING.findall(rest) for label in g.split(",") if label.strip()]
    rest = GROUPING.sub(" ", rest)
    rest = re.sub(r'\[[^\]]*\]', " ", rest)      # range [$__rate_interval]
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', " ", rest)  # strings
    named = {n for n, _ in selectors}
    for m in IDENT.finditer(rest):
        word = m.group(1)
        if word.lower() in KEYWORDS or re.match(r"\s*\(", rest[m.end():]):
            continue  # a keyword or a function call
        if word not in named:
            selectors.append((word, {}))
            named.add(word)
    return selectors, grouping, problems


def check_expr(expr: str, exported: Exposition, filtered: bool = True) -> list[str]:
    """What is wrong with one expression against the exported metrics."""
    selectors, grouping, wrong = parse_promql(expr)
    if not selectors:
        wrong.append("names no metric")
    for name, matchers in selectors:
        if name not in exported.samples:
            family = exported.family(name)
            hint = f" (a {exported.types[family]}: use its _bucket/_sum/_count)" if family else ""
            wrong.append(f"metric {name} is not exported by the binary{hint}")
            continue
        labels = exported.samples[name]
        for label, (op, value) in matchers.items():
            if label in TARGET_LABELS:
                continue
            if label not in labels:
                wrong.append(f"{name} has no label {label} (it has {sorted(labels) or 'none'})")
            elif op == "=" and value not in labels[label]:
                wrong.append(f"{name}{{{label}}} is never {value!r} (values: {sorted(labels[label])})")
        if filtered:
            have = {f'{k}{op}"{v}"' for k, (op, v) in matchers.items()}
            missing = [var for var, matcher in FILTERS.items() if matcher not in have]
            if missing:
                wrong.append(f"{name} selector ignores the filter variable(s) {missing}")
    for label in grouping:
        if label in TARGET_LABELS:
            continue
        lacking = [n for n, _ in selectors if n in exported.samples and label not in exported.samples[n]]
        if lacking:
            wrong.append(f"groups by {label}, which {lacking} do not carry")
    return wrong


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(where, PromQL, must apply the filters) for every panel target and query variable."""
    found = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            found.append((f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}",
                          target.get("expr", ""), True))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_]\w*)\)", q)
            assert m, f"variable {var['name']}: not label_values(selector, label): {q}"
            # The variable's own label must exist on the metric (or be a target label).
            found.append((f"variable {var['name']}", f"sum by ({m.group(2)}) ({m.group(1)})", False))
    return found


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # a collapsed row's panels
    return out


def problems(dashboard: dict[str, Any], exported: Exposition) -> list[str]:
    return [f"{where}: {p}: {expr}" for where, expr, filtered in queries(dashboard)
            for p in check_expr(expr, exported, filtered)]


# --------------------------------------------------------------------------------------------
# The queries


def test_every_query_names_only_exported_metrics_and_labels(exported: Exposition) -> None:
    wrong = problems(DASHBOARD, exported)
    assert not wrong, "\n".join(wrong)
    note(f"dashboard: {len(queries(DASHBOARD))} queries checked against "
         f"{len(exported.types)} exported metric families")


def test_every_exported_metric_has_a_panel(exported: Exposition) -> None:
    used = {exported.family(name) for _, expr, _ in queries(DASHBOARD)
            for name, _ in parse_promql(expr)[0]}
    missing = sorted(set(exported.types) - used)
    assert not missing, f"exported metrics without a panel in files/dashboard.json: {missing}"


BROKEN = {
    "a metric the binary does not export": 'sum(rate(http_nas_lock_waits_total{SEL}[5m]))',
    "a histogram's bare name": 'histogram_quantile(0.99, sum by (le) (rate(http_nas_request_duration_seconds{SEL}[5m])))',
    "a label the metric lacks, in by()": 'sum by (method) (rate(http_nas_requests_total{SEL}[5m]))',
    "le on a counter": 'sum by (le) (rate(http_nas_requests_total{SEL}[5m]))',
    "a label the metric lacks, in a selector": 'sum(rate(http_nas_body_bytes_total{op="upload",SEL}[5m]))',
    "a label value never emitted": 'sum(rate(http_nas_requests_total{status="500",SEL}[5m]))',
    "a metric hidden behind __name__": 'sum(rate({__name__=~"http_nas_.*",SEL}[5m]))',
    "a metric without the filters": 'sum(http_nas_workers)',
    "a bare name on the right of a division": 'sum(http_nas_busy_workers{SEL}) / sum(http_nas_threads)',
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_checker_finds_a_broken_query(exported: Exposition, case: str) -> None:
    expr = BROKEN[case].replace("SEL", ", ".join(FILTERS.values())).replace("{, ", "{")
    assert check_expr(expr, exported), f"not caught: {expr}"


def test_checker_accepts_the_forms_the_dashboard_uses(exported: Exposition) -> None:
    sel = ", ".join(FILTERS.values())
    for expr in [f'sum by (op, status) (rate(http_nas_requests_total{{{sel}}}[$__rate_interval]))',
                 f'histogram_quantile(0.5, sum by (le) (rate(http_nas_request_duration_seconds_bucket{{{sel}}}[5m])))',
                 f'sum(rate(http_nas_requests_total{{status="5xx", {sel}}}[1m])) / sum(rate(http_nas_requests_total{{{sel}}}[1m]))',
                 f'min by (pod) (http_nas_storage_free_bytes{{{sel}}})']:
        assert check_expr(expr, exported) == [], expr


def test_checker_reads_every_panel_and_variable(exported: Exposition) -> None:
    # A broken query in any panel (or a variable) is reported, naming where it is.
    places = 0
    for panel in all_panels(DASHBOARD):
        for i, _ in enumerate(panel.get("targets", [])):
            broken = json.loads(json.dumps(DASHBOARD))
            target = [p for p in all_panels(broken) if p["id"] == panel["id"]][0]["targets"][i]
            target["expr"] = target["expr"].replace("http_nas_", "http_nass_")
            wrong = problems(broken, exported)
            assert any(w.startswith(f"panel {panel['id']} ") and "http_nass_" in w for w in wrong), (
                panel["id"], i, wrong)
            places += 1
    for var in DASHBOARD["templating"]["list"]:
        if var["type"] == "query":
            broken = json.loads(json.dumps(DASHBOARD))
            v = [v for v in broken["templating"]["list"] if v["name"] == var["name"]][0]
            v["query"]["query"] = v["query"]["query"].replace("http_nas_workers", "http_nas_worker")
            assert any(w.startswith(f"variable {var['name']}:") for w in problems(broken, exported))
            places += 1
    assert places == len(queries(DASHBOARD)) > 10, places


# --------------------------------------------------------------------------------------------
# The dashboard's shape


def test_dashboard_identity() -> None:
    assert DASHBOARD["uid"] == "http-nas" and DASHBOARD["title"] == "http-nas"
    assert DASHBOARD.get("id") is None, "a provisioned dashboard carries no database id"
    assert 36 <= DASHBOARD["schemaVersion"] <= 41, DASHBOARD["schemaVersion"]
    assert DASHBOARD["templating"]["list"][0] == {**DASHBOARD["templating"]["list"][0],
                                                  "name": "datasource", "type": "datasource",
                                                  "query": "prometheus"}


def test_filter_variables_exist() -> None:
    names = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    for var in FILTERS:
        v = names.get(var)
        assert v and v["type"] == "query" and v["datasource"] == DATASOURCE, f"variable {var}: {v}"
        # All = .*, which also matches series without the label (pods scraped by annotation).
        assert v["includeAll"] and v["allValue"] == ".*", v


def test_every_panel_has_the_datasource_and_a_unique_id() -> None:
    panels = all_panels(DASHBOARD)
    ids = [p.get("id") for p in panels]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    for p in panels:
        if p["type"] == "row":
            continue
        where = f"panel {p['id']} {p.get('title')!r}"
        assert p.get("datasource") == DATASOURCE, f"{where}: datasource {p.get('datasource')}"
        assert p.get("targets"), f"{where}: no queries"
        assert all(t.get("datasource") == DATASOURCE for t in p["targets"]), f"{where}: a target's datasource"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), f"{where}: duplicate refIds {refs}"
        assert p.get("title") and p.get("gridPos", {}).get("w"), f"{where}: title or gridPos missing"


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in DASHBOARD["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"panel {p['id']} beyond the 24 columns"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['id']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = str(p["id"])


# --------------------------------------------------------------------------------------------
# The ConfigMap


def dashboards(r: Rendered) -> list[dict[str, Any]]:
    return [c for c in r.all("ConfigMap") if any(k.endswith(".json") for k in c.get("data", {}))]


def test_off_by_default(defaults: Rendered) -> None:
    assert dashboards(defaults) == [], "a dashboard ConfigMap rendered with the default values"
    assert defaults.all("ConfigMap") == []


def test_enabled_renders_the_dashboard_for_the_sidecar(render: Callable[..., Rendered]) -> None:
    r = render(sets("grafanaDashboard.enabled=true"))
    cm = r.one("ConfigMap")
    meta = cm["metadata"]
    assert meta["labels"]["grafana_dashboard"] == "1", meta["labels"]
    assert meta["namespace"] == NAMESPACE and meta["name"] == "http-nas-dashboard", meta
    assert "annotations" not in meta, meta
    assert list(cm["data"]) == ["http-nas.json"], list(cm["data"])
    assert json.loads(cm["data"]["http-nas.json"]) == DASHBOARD
    for version in ("1.25.0", "1.34.0"):
        validate_objects(r, version)


def test_labels_namespace_and_annotations(render: Callable[..., Rendered]) -> None:
    r = render(sets("grafanaDashboard.enabled=true,grafanaDashboard.namespace=monitoring",
                    "grafanaDashboard.labels.team=storage",
                    "grafanaDashboard.annotations.grafana_folder=Storage"), release="files")
    meta = r.one("ConfigMap")["metadata"]
    assert meta["namespace"] == "monitoring" and meta["name"] == "files-http-nas-dashboard", meta
    assert meta["labels"]["team"] == "storage" and meta["labels"]["grafana_dashboard"] == "1", meta
    assert meta["labels"]["app.kubernetes.io/instance"] == "files", meta
    assert meta["annotations"] == {"grafana_folder": "Storage"}, meta
    other = render(sets("grafanaDashboard.enabled=true",
                        "grafanaDashboard.labels.grafana_dashboard=null,grafanaDashboard.labels.dash=yes"))
    labels = other.one("ConfigMap")["metadata"]["labels"]
    assert "grafana_dashboard" not in labels and labels["dash"] == "yes", labels
