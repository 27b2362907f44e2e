"""Chart defaults named in the documentation agree with helm/http-nas/values.yaml.

values.yaml (with its comments) is the one source of the chart's defaults. The docs may still
name a default where it helps the reader; they then write it as `key: value` in backticks
(`server.workers: 128`, `resources.limits.memory: 96Mi`), or as `key` followed by "default X"
in the same clause; a value the reader chooses is written `key=value`, as `helm --set` takes it.
Every such mention whose key is a value of the chart is compared with
values.yaml, so a default changed in one place and not the other fails .ci/helm-check.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from chartlib import CHART, ROOT

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())

# The documents that name chart defaults.
DOCS = [CHART / "README.md", ROOT / "README.md", ROOT / "docs" / "operations.md"]

# `pvc.size: 1Gi`: a dotted values key, a colon, the value.
KEY_VALUE = re.compile(r"`([A-Za-z][\w]*(?:\.[\w]+)*): ([^`]+)`")
# `pvc.keepOnUninstall`, default true / (`server.workers`, default 128) / `x` (default: `y`)
KEY_DEFAULT = re.compile(r"`([A-Za-z][\w]*(?:\.[\w]+)*)`[,:]?\s+\(?default:?\s+`?([^`\s,;)|]+)`?")

MISSING = object()


def lookup(key: str) -> Any:
    """The value of a dotted key in values.yaml, or MISSING."""
    node: Any = VALUES
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def named_defaults(text: str) -> list[tuple[str, str, int]]:
    """(key, value as written, line number) for every chart default the text names."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern in (KEY_VALUE, KEY_DEFAULT):
            for m in pattern.finditer(line):
                if m.group(1).split(".")[0] in VALUES:
                    found.append((m.group(1), m.group(2).strip(), number))
    return found


def disagreements(text: str) -> list[str]:
    """One line per named default that values.yaml does not have or holds differently."""
    wrong = []
    for key, written, number in named_defaults(text):
        actual = lookup(key)
        if actual is MISSING:
            wrong.append(f"line {number}: `{key}` is not a value in values.yaml")
            continue
        try:
            meant = yaml.safe_load(written)
        except yaml.YAMLError:
            meant = written
        if meant != actual and written != str(actual):
            wrong.append(f"line {number}: `{key}` written as {written!r}, values.yaml has {actual!r}")
    return wrong


def default_tables(text: str) -> list[str]:
    """Rows of Markdown tables with a "default" column whose first cell names a chart value: a
    copy of values.yaml's defaults, which drifts (such a table once said workers 16 and a 64Mi
    limit while values.yaml said 128 and 96Mi)."""
    rows, in_table = [], False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped.startswith("|"):
            in_table = False
            continue
        cells = [c.strip().lower() for c in stripped.strip("|").split("|")]
        if not in_table:
            in_table = "default" in cells
            continue
        keys = [k.removesuffix(".*") for k in re.findall(r"`([^`]+)`", stripped.split("|")[1])]
        if any(k.split(".")[0] in VALUES for k in keys):
            rows.append(f"line {number}: {stripped[:80]}")
    return rows


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_copy_no_table_of_chart_defaults(doc: Path) -> None:
    rows = default_tables(doc.read_text())
    assert not rows, (f"{doc.relative_to(ROOT)} has a table of chart defaults; values.yaml is their "
                      "one source: drop the column and name a default as `key: value`:\n" + "\n".join(rows))


def test_checker_finds_a_table_of_chart_defaults() -> None:
    table = ("| value | default | meaning |\n|---|---|---|\n"
             "| `server.*` | workers 16, queue 64 | flags |\n| `resources` | limit 64Mi | |\n")
    assert len(default_tables(table)) == 2
    flags = "| flag | env | default |\n|---|---|---|\n| `--workers N` | `HTTP_NAS_WORKERS` | 128 |\n"
    assert default_tables(flags) == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_defaults_named_in_docs_match_values_yaml(doc: Path) -> None:
    wrong = disagreements(doc.read_text())
    assert not wrong, f"{doc.relative_to(ROOT)} disagrees with values.yaml:\n" + "\n".join(wrong)


def test_chart_readme_names_defaults_in_the_checked_form() -> None:
    # The chart README promises that its defaults are checked; make sure the check sees some.
    keys = {key for key, _, _ in named_defaults((CHART / "README.md").read_text())}
    assert {"server.workers", "resources.limits.memory", "pvc.size"} <= keys, keys


@pytest.mark.parametrize("text, wrong", [
    ("`server.workers: 128`", False),
    ("(`server.workers`, default 128)", False),
    ("`resources.requests.memory: 32Mi`", False),
    ("`pvc.keepOnUninstall: true`", False),
    ("`storagePath: /mnt/storage`", False),
    ("`tokensSecretKey`, default `tokens`", False),
    ("`storageClassName: \"\"`", False),       # not a chart value: not checked
    ("`server.workers: 16`", True),            # the old README's table said 16
    ("`server.queue: 64`", True),
    ("`resources.requests.memory: 16Mi`", True),
    ("`resources.limits.memory: 64Mi`", True),
    ("(`server.workers`, default 16)", True),
    ("`server.wokers: 128`", True),            # a key values.yaml does not have
])
def test_checker_finds_wrong_defaults(text: str, wrong: bool) -> None:
    assert bool(disagreements(text)) == wrong, disagreements(text)
