#!/bin/sh
# `helm test` for http-nas: exercises the API the way jobs use it and exits non-zero on the
# first mismatch. POSIX sh + curl + cmp/head/od/tr (busybox in curlimages/curl is enough).
#
# Environment:
#   HTTP_NAS_URL              base URL of the service, e.g. http://http-nas:3000
#   HTTP_NAS_TOKEN_FILE       optional: file with the read-write token (auth enabled)
#   HTTP_NAS_READ_TOKEN_FILE  optional: file with the read-only token
#   HTTP_NAS_TOKENS_FILE      optional: scoped tokens file; its first unscoped `rw` line (`TOKEN rw`,
#                             no prefixes) is used when HTTP_NAS_TOKEN_FILE is not set, and the
#                             test fails with a message saying so when there is none
#   TMPDIR                    scratch directory (default /tmp)
set -eu

base="${HTTP_NAS_URL:?HTTP_NAS_URL must be set}"
base="${base%/}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/http-nas-test.XXXXXX")"
passed=0

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
ok() {
  passed=$((passed + 1))
  echo "ok $passed - $*"
}

# Authorization header files (curl -H @file keeps the token off the command line).
auth_rw=""
auth_ro=""
if [ -n "${HTTP_NAS_TOKEN_FILE:-}" ]; then
  printf 'Authorization: Bearer %s\n' "$(cat "$HTTP_NAS_TOKEN_FILE")" > "$tmp/auth-rw"
  auth_rw="$tmp/auth-rw"
fi
if [ -z "$auth_rw" ] && [ -n "${HTTP_NAS_TOKENS_FILE:-}" ]; then
  # Fields as the server reads them: split on blanks; a field that starts with # begins a
  # comment (a # inside a token is part of it). The first line `TOKEN rw` with no prefixes wins.
  set -f
  while IFS= read -r line || [ -n "$line" ]; do
    set -- $line
    tok=""
    access=""
    scoped=""
    for field in "$@"; do
      case "$field" in '#'*) break ;; esac
      if [ -z "$tok" ]; then
        tok="$field"
      elif [ -z "$access" ]; then
        access="$field"
      else
        scoped=yes
        break
      fi
    done
    if [ -n "$tok" ] && [ "$access" = rw ] && [ -z "$scoped" ]; then
      printf 'Authorization: Bearer %s\n' "$tok" > "$tmp/auth-rw"
      auth_rw="$tmp/auth-rw"
      break
    fi
  done < "$HTTP_NAS_TOKENS_FILE"
  set +f
  [ -n "$auth_rw" ] || fail "helm test needs an unscoped rw token in the tokens file (a line \`TOKEN rw\`); $HTTP_NAS_TOKENS_FILE has none"
fi
if [ -n "${HTTP_NAS_READ_TOKEN_FILE:-}" ]; then
  printf 'Authorization: Bearer %s\n' "$(cat "$HTTP_NAS_READ_TOKEN_FILE")" > "$tmp/auth-ro"
  auth_ro="$tmp/auth-ro"
fi

# c ARGS...: curl with the read-write token when there is one.
c() {
  if [ -n "$auth_rw" ]; then
    curl -sS --max-time 60 -H "@$auth_rw" "$@"
  else
    curl -sS --max-time 60 "$@"
  fi
}
# code ARGS...: the HTTP status of a request, body discarded.
code() {
  c -o /dev/null -w '%{http_code}' "$@" || true
}

dir="helm-test-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cleanup() {
  c -o /dev/null -X DELETE "$base/file/$dir" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
echo "testing $base (directory $dir)"

# Health endpoints (always open).
[ "$(curl -sS -o /dev/null -w '%{http_code}' "$base/healthz")" = 200 ] || fail "/healthz is not 200"
ok "/healthz answers 200"
[ "$(curl -sS -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ] || fail "/readyz is not 200: storage not writable?"
ok "/readyz answers 200 (storage writable)"

# Upload from a pipe (chunked), the way jobs stream files in.
printf 'id,name\n1,alpha\n' | tee "$tmp/expected" \
  | c -f -o /dev/null -X POST -H "Transfer-Encoding: chunked" -T - "$base/file/$dir/data.csv" \
  || fail "upload from a pipe failed"
ok "upload from a pipe"

# Append from a pipe; the expected file grows the same way.
printf '2,beta\n3,gamma\n' | tee -a "$tmp/expected" \
  | c -f -o /dev/null -X PUT -H "Transfer-Encoding: chunked" -T - "$base/file/$dir/data.csv" \
  || fail "append failed"
ok "append from a pipe"

# Download and compare byte for byte; the 1.x encoded form (dir%2Fname) names the same file.
c -f -o "$tmp/got" "$base/file/$dir/data.csv" || fail "download failed"
cmp "$tmp/expected" "$tmp/got" || fail "downloaded content differs from what was uploaded and appended"
c -f -o "$tmp/got-encoded" "$base/file/$dir%2Fdata.csv" || fail "download by encoded path failed"
cmp "$tmp/expected" "$tmp/got-encoded" || fail "encoded-path download differs"
ok "download matches upload + append"

# Line count, exactly like wc -l.
lines="$(c -f "$base/file/$dir/data.csv/wc")" || fail "wc request failed"
want="$(wc -l < "$tmp/expected" | tr -d ' ')"
[ "$lines" = "$want" ] || fail "wc answered '$lines', expected $want"
ok "wc = $lines"

# A binary file larger than one 256 KiB I/O buffer survives the round trip.
head -c 300000 /dev/urandom > "$tmp/blob"
c -f -o /dev/null -X POST --data-binary "@$tmp/blob" "$base/file/$dir/blob.bin" || fail "binary upload failed"
c -f -o "$tmp/blob-got" "$base/file/$dir/blob.bin" || fail "binary download failed"
cmp "$tmp/blob" "$tmp/blob-got" || fail "binary content differs after a round trip"
ok "300000-byte binary round trip"

# Listing shows both files.
c -f -o "$tmp/list" "$base/file/$dir" || fail "listing failed"
grep -qx 'data.csv' "$tmp/list" || fail "listing lacks data.csv: $(cat "$tmp/list")"
grep -qx 'blob.bin' "$tmp/list" || fail "listing lacks blob.bin: $(cat "$tmp/list")"
ok "listing"

# Move, then the old name is gone and the new one has the content.
c -f -o /dev/null -X PUT -H 'Content-Type: application/json' \
  --data-raw "{\"path\": \"$dir/moved/data.csv\"}" "$base/file/$dir/data.csv/mv" || fail "move failed"
[ "$(code "$base/file/$dir/data.csv")" = 404 ] || fail "the old name still exists after the move"
c -f -o "$tmp/moved" "$base/file/$dir/moved/data.csv" || fail "download after move failed"
cmp "$tmp/expected" "$tmp/moved" || fail "moved file differs"
ok "move"

# Authentication, when configured: no token -> 401; read-only token reads, cannot write.
if [ -n "$auth_rw" ]; then
  status="$(curl -sS -o /dev/null -w '%{http_code}' "$base/file/$dir/moved/data.csv" || true)"
  [ "$status" = 401 ] || fail "a request without the token answered $status, expected 401"
  ok "no token -> 401"
fi
if [ -n "$auth_ro" ]; then
  curl -sS -f -H "@$auth_ro" -o "$tmp/ro" "$base/file/$dir/moved/data.csv" || fail "read with the read-only token failed"
  cmp "$tmp/expected" "$tmp/ro" || fail "read-only download differs"
  status="$(printf 'x\n' | curl -sS -o /dev/null -w '%{http_code}' -H "@$auth_ro" -X PUT --data-binary @- "$base/file/$dir/moved/data.csv" || true)"
  [ "$status" = 403 ] || fail "a write with the read-only token answered $status, expected 403"
  ok "read-only token reads, cannot write"
fi

# Delete the directory tree; then it is gone.
c -f -o /dev/null -X DELETE "$base/file/$dir" || fail "delete failed"
[ "$(code "$base/file/$dir")" = 404 ] || fail "the directory still exists after DELETE"
ok "delete"

echo "$passed passed, 0 failed"
