"""An Airflow pipeline that keeps its files on http-nas, the way pipelines use it.

Parallel extract tasks stream generated CSV parts into a run directory with `curl -X POST -T -`
(a POST creates or replaces the part atomically, so an Airflow retry of the task leaves one copy;
a bare `curl -T` is a PUT, which appends, and a retry would double the part); a fan-in task
joins the parts into one file on the server with `POST .../all.csv/concat` (the bytes never leave
the volume; a POST replaces, so a rerun of the task, an Airflow retry or "Clear task", yields the
same file, not the parts twice; `curl --retry` repeats it after a lost connection); a gate checks
the line count with `/wc`; publish moves the result out of the run directory (`/mv`), succeeding on a rerun whose
source is gone when the target is there, and checks the published file's SHA-256, kept by the
service since the concatenation (`Want-Repr-Digest`), against `sha256sum` of a download; and cleanup deletes the run directory, succeeding when it
is already gone. Deploy the chart with `expire` naming `runs/` (e.g. `--set-json
'expire={"runs/":"7d"}'`) so a run directory a failed run never cleaned up goes after a week.

Every task is one shell script, so the same commands run in a `KubernetesPodOperator` pod (any
image with `sh` and `curl`, such as this project's `-debug` image; the form users deploy) or in
a `BashOperator` on the worker. `HTTP_NAS_DAG_OPERATOR` picks one: `kubernetes` (default) or
`bash`. `HTTP_NAS_URL` says where the service is (default `http://http-nas:3000`, the chart's
Service), `HTTP_NAS_IMAGE` which image the pods run.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

URL = os.environ.get("HTTP_NAS_URL", "http://http-nas:3000")
OPERATOR = os.environ.get("HTTP_NAS_DAG_OPERATOR", "kubernetes")
IMAGE = os.environ.get("HTTP_NAS_IMAGE", "ghcr.io/redactics/http-nas:0.1.0-debug")
PARTS = 3
ROWS_PER_PART = 1000

# The run's own directory: one per DAG run, so runs never see each other's parts.
RUN = "runs/{{ ts_nodash }}"

# Rows of part $1: "part,row,square" for row 1..ROWS_PER_PART (busybox seq and awk suffice).
GENERATE = f"seq 1 {ROWS_PER_PART} | awk -v p=\"$1\" '{{print p\",\"$1\",\"$1*$1}}'"

def script(body: str) -> str:
    """A task's shell script: strict, with the service's URL and the run directory set."""
    return f"set -eu\nURL='{URL}'\nRUN='{RUN}'\n{body}"


EXTRACT = (
    "generate() { " + GENERATE + "; }\n"
    "generate \"$PART\" | curl -sS --fail-with-body -X POST -T - -o /dev/null \"$URL/file/$RUN/part-$PART.csv\"\n"
    "echo \"part $PART stored\"\n"
)

# The parts joined on the server, in order. Rerun-safe: a POST replaces all.csv whole, and a
# retry after a lost answer does the same again. Streaming clients that append as data arrives use
# the README's append_once loop (Upload-Offset) instead.
SOURCES = ", ".join(f'\\"$RUN/part-{p}.csv\\"' for p in range(1, PARTS + 1))
FAN_IN = f"""
# Want-Repr-Digest: the joined file keeps its SHA-256, so publish can check the whole file
# without the service rereading it.
curl -sS --fail-with-body --retry 3 --retry-all-errors -o /dev/null -X POST \\
  -H 'Want-Repr-Digest: sha-256=1' \\
  -H 'Content-Type: application/json' -d "{{\\"sources\\": [{SOURCES}]}}" "$URL/file/$RUN/all.csv/concat"
echo "fan-in done: $(curl -sS --fail-with-body "$URL/file/$RUN/all.csv/wc") lines"
"""

GATE = f"""
lines=$(curl -sS --fail-with-body "$URL/file/$RUN/all.csv/wc")
test "$lines" = "{PARTS * ROWS_PER_PART}" || {{ echo "expected {PARTS * ROWS_PER_PART} lines, got $lines"; exit 1; }}
"""

# Rerun-safe: when an earlier attempt's move went through but its answer was lost, the source is
# gone (404); that is success when the target exists.
PUBLISH = """
target="published/all-{{ ts_nodash }}.csv"
code=$(curl -sS -o /tmp/publish.out -w '%{http_code}' -X PUT -d "{\\"path\\": \\"$target\\"}" \
  "$URL/file/$RUN/all.csv/mv")
case $code in
  200) echo "published $target" ;;
  404) curl -sS --fail-with-body -I -o /dev/null "$URL/file/$target" \\
         || { echo "publish: neither $RUN/all.csv nor $target exists"; exit 1; }
       echo "already published $target" ;;
  *)   echo "publish answered $code: $(cat /tmp/publish.out)"; exit 1 ;;
esac
# Verify the published bytes end to end: the SHA-256 the service kept for the file (Repr-Digest,
# base64) against sha256sum of what a download brings.
curl -sS --fail-with-body -D /tmp/published.h -o /tmp/published.csv \\
  -H 'Want-Repr-Digest: sha-256=1' "$URL/file/$target" || exit 1
kept=$(tr -d '\\r' < /tmp/published.h | sed -n 's/^[Rr]epr-[Dd]igest:.*sha-256=:\\([^:]*\\):.*/\\1/p' \\
  | base64 -d | od -An -tx1 | tr -d ' \\n')
got=$(sha256sum /tmp/published.csv | cut -d' ' -f1)
[ -n "$kept" ] && [ "$kept" = "$got" ] || { echo "published file: kept sha-256 '$kept', download '$got'"; exit 1; }
echo "verified $target: sha-256 $got"
"""

# Succeeds when the directory is already gone: a 404 with the original's exact body.
CLEANUP = """
code=$(curl -s -o /tmp/cleanup.out -w '%{http_code}' -X DELETE "$URL/file/$RUN")
case $code in
  200) echo "run directory deleted" ;;
  404) grep -qx 'Not Found' /tmp/cleanup.out && echo "run directory already gone" ;;
  *)   echo "cleanup answered $code"; exit 1 ;;
esac
"""


def task(task_id: str, body: str, env: dict[str, str] | None = None, **kwargs):
    """One step, as a pod or as a bash command, from the same script."""
    if OPERATOR == "bash":
        from airflow.providers.standard.operators.bash import BashOperator

        return BashOperator(task_id=task_id, bash_command=script(body), env=env, append_env=True, **kwargs)
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    return KubernetesPodOperator(
        task_id=task_id,
        name=task_id.replace("_", "-"),
        image=IMAGE,
        cmds=["sh", "-c"],
        arguments=[script(body)],
        env_vars=[k8s.V1EnvVar(name=k, value=v) for k, v in (env or {}).items()],
        get_logs=True,
        **kwargs,
    )


with DAG(
    dag_id="http_nas_pipeline",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["http-nas", "example"],
    doc_md=__doc__,
) as dag:
    extracts = [task(f"extract_{p}", EXTRACT, env={"PART": str(p)}) for p in range(1, PARTS + 1)]
    fan_in = task("fan_in", FAN_IN)
    gate = task("gate", GATE)
    publish = task("publish", PUBLISH)
    cleanup = task("cleanup", CLEANUP, trigger_rule="all_done")
    # Cleanup runs whatever happened, so it would make every run look successful; this fails
    # the run when any step did (and is skipped otherwise).
    failed = task("fail_run_if_a_step_failed", "echo 'a step failed'; exit 1", trigger_rule="one_failed")
    extracts >> fan_in >> gate >> publish >> cleanup
    [*extracts, fan_in, gate, publish] >> failed
