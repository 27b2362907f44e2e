"""An Airflow pipeline that keeps its files on http-nas, the way pipelines use it.

Parallel extract tasks stream generated CSV parts into a run directory with `curl -X POST -T -`
(a POST creates or replaces the part atomically, so an Airflow retry of the task leaves one copy;
a bare `curl -T` is a PUT, which appends, and a retry would double the part); a fan-in task appends every part to one file with `Upload-Offset` and the README's retry loop
(its first attempt at one part is deliberately cut mid-body, so the retry path really runs); a
gate checks the line count with `/wc`; publish moves the result out of the run directory (`/mv`); and
cleanup deletes the run directory, succeeding when it is already gone.

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
IMAGE = os.environ.get("HTTP_NAS_IMAGE", "ghcr.io/example/http-nas:latest-debug")
PARTS = 3
ROWS_PER_PART = 1000

# The run's own directory: one per DAG run, so runs never see each other's parts.
RUN = "runs/{{ ts_nodash }}"

# Rows of part $1: "part,row,square" for row 1..ROWS_PER_PART (busybox seq and awk suffice).
GENERATE = f"seq 1 {ROWS_PER_PART} | awk -v p=\"$1\" '{{print p\",\"$1\",\"$1*$1}}'"

# The README's append_once, with one addition: the first attempt may carry extra curl options
# ($CUT_FIRST), which the fan-in uses once to cut an attempt mid-body on purpose.
APPEND_ONCE = r"""
append_once() {
  len=$(wc -c < "$1"); hdr=$(mktemp)
  code=$(curl -s -o /dev/null -D "$hdr" -w '%{http_code}' -I "$2")
  case $code in
    200) offset=$(tr -d '\r' < "$hdr" | awk 'tolower($1)=="content-length:" {print $2}') ;;
    404) offset=0 ;;
    *)   rm -f "$hdr"; return 1 ;;
  esac
  for attempt in 1 2 3 4 5; do
    extra=""; [ "$attempt" = 1 ] && extra="$CUT_FIRST"
    code=$(curl -s $extra -o /dev/null -D "$hdr" -w '%{http_code}' -X PUT \
           -H "Upload-Offset: $offset" --data-binary @"$1" "$2")
    now=$(tr -d '\r' < "$hdr" | awk 'tolower($1)=="upload-offset:" {print $2}' | tail -n 1)
    case $code in
      200) rm -f "$hdr"; return 0 ;;
      409) rm -f "$hdr"; [ "$now" = "$((offset + len))" ]; return ;;
      *)   echo "attempt $attempt at $2 failed (HTTP $code); retrying"; sleep "$attempt" ;;
    esac
  done
  rm -f "$hdr"; return 1
}
"""


def script(body: str) -> str:
    """A task's shell script: strict, with the service's URL and the run directory set."""
    return f"set -eu\nURL='{URL}'\nRUN='{RUN}'\n{body}"


EXTRACT = (
    "generate() { " + GENERATE + "; }\n"
    "generate \"$PART\" | curl -sS --fail-with-body -X POST -T - -o /dev/null \"$URL/file/$RUN/part-$PART.csv\"\n"
    "echo \"part $PART stored\"\n"
)

FAN_IN = APPEND_ONCE + f"""
# The loop reads curl's failures itself (a cut attempt exits 28), so no errexit inside it.
set +e
for part in $(seq 1 {PARTS}); do
  curl -sS --fail-with-body -o /tmp/part.csv "$URL/file/$RUN/part-$part.csv"
  # Part 2's first attempt is sent at 4 KB/s for at most 1 s: cut mid-body, so nothing of it
  # is appended, and the retry (same offset) appends it once.
  CUT_FIRST=""; [ "$part" = 2 ] && CUT_FIRST="--limit-rate 4k --max-time 1"
  append_once /tmp/part.csv "$URL/file/$RUN/all.csv" || {{ echo "could not append part $part"; exit 1; }}
done
echo "fan-in done: $(curl -sS --fail-with-body "$URL/file/$RUN/all.csv/wc") lines"
"""

GATE = f"""
lines=$(curl -sS --fail-with-body "$URL/file/$RUN/all.csv/wc")
test "$lines" = "{PARTS * ROWS_PER_PART}" || {{ echo "expected {PARTS * ROWS_PER_PART} lines, got $lines"; exit 1; }}
"""

PUBLISH = """
curl -sS --fail-with-body -X PUT -d '{"path": "published/all-{{ ts_nodash }}.csv"}' \
  "$URL/file/$RUN/all.csv/mv" -o /dev/null
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
