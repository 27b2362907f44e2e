"""Fixtures for the chart tests (run by .ci/helm-check: `python -m pytest helm/tests`).

- chart: the chart in helm/http-nas, loaded once per session (Helm's Go library);
- render(values, release=...): an offline `helm install --dry-run` of that chart;
- defaults: the render with the default values, once per session;
- http_nas_bin: the http-nas binary for the live `helm test` run, from --http-nas-bin or the
  HTTP_NAS_BIN environment variable; without one the live tests are skipped.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate
import pytest

import chartlib
from chartlib import RELEASE, Rendered


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--http-nas-bin", default=os.environ.get("HTTP_NAS_BIN") or None,
                     help="http-nas binary for the live helm test run (default: $HTTP_NAS_BIN; "
                          "none: those tests are skipped)")


def pytest_configure(config: pytest.Config) -> None:
    # The Go library logs through its own default logger; keep its INFO lines out of the report.
    quiet = logging.getLogger("helm-check-native")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    helm.enable_logging(logging.ERROR, quiet)


def pytest_report_header(config: pytest.Config) -> str:
    return (f"helm-python-sdk {helm.__version__} (Helm Go SDK {helm.helm_sdk_version()}), "
            f"kubernetes-validate {kubernetes_validate.__version__}")


@pytest.fixture(scope="session")
def chart() -> Any:
    shutil.rmtree(chartlib.RENDER_DIR, ignore_errors=True)
    chartlib.RENDER_DIR.mkdir(parents=True)
    with helm.Chart.load(chartlib.CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: Any) -> Callable[..., Rendered]:
    def render(values: dict[str, Any], release: str = RELEASE) -> Rendered:
        return chartlib.render(chart, values, release)
    return render


@pytest.fixture(scope="session")
def defaults(render: Callable[..., Rendered]) -> Rendered:
    return render({})


@pytest.fixture(scope="session")
def http_nas_bin(request: pytest.FixtureRequest) -> Path:
    path = request.config.getoption("--http-nas-bin")
    if not path:
        pytest.skip("no http-nas binary given (--http-nas-bin or HTTP_NAS_BIN)")
    binary = Path(path)
    assert binary.is_file() and os.access(binary, os.X_OK), f"{binary} is not an executable file"
    return binary.resolve()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    tr = terminalreporter
    tr.write_line(pytest_report_header(config))
    for text in chartlib.NOTES:
        tr.write_line(f"note: {text}")
    if chartlib.RENDER_DIR.is_dir():
        tr.write_line(f"rendered manifests: {chartlib.RENDER_DIR.relative_to(chartlib.ROOT)}/<scenario>/")
    counts = {k: len([r for r in tr.stats.get(k, []) if getattr(r, "when", "call") in ("call", "setup")])
              for k in ("passed", "failed", "skipped", "error")}
    total = sum(counts.values())
    tr.write_line(f"helm-check: {total} cases: {counts['passed']} passed, {counts['failed']} failed, "
                  f"{counts['skipped']} skipped, {counts['error']} errors")
