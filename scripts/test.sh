#!/usr/bin/env bash
# Installs what the tests need, then runs them all: vet, format, unit and
# integration tests (e2e/ drives archip with qemu-img, qemu-io, nbdinfo,
# nbdcopy, nbdfuse, fio, libnbd), the race detector, a short run of every
# fuzz target, every benchmark once (to see that they run; numbers:
# docs/benchmarks.md), a short provisioning storm (bench/storm.sh) and a
# tiny run of the catalog benchmark (bench/catalog.sh).
# Under CI=true a skipped test is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
scripts/install-test-deps.sh
ARCHIP_TEST_VERSITYGW=${ARCHIP_VERSITYGW_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/archip/bin}/versitygw
export ARCHIP_TEST_VERSITYGW

log=$(mktemp)
cephdir=$(mktemp -d)
trap 'scripts/ceph-cluster.sh stop "$cephdir" >/dev/null 2>&1 || true; rm -f "$log"' EXIT

# failures LOG: what each failed test of a go test -v log printed (the
# last 200 lines of it: its error, and the logs its cleanups print, such
# as the end of each daemon's log in e2e), then each panic with the 40
# lines after it. Parallel tests' lines interleave: the "=== RUN", "CONT"
# or "NAME" line before a line names its test.
failures() {
  awk '/^=== (RUN|CONT|NAME|PAUSE) /{n=$3}
    {c[n]++; b[n, c[n]] = $0}
    /^ *--- FAIL: /{t=$3; print "--- output of " t ":"; for (i = (c[t] > 200 ? c[t] - 199 : 1); i <= c[t]; i++) print b[t, i]}' "$1" | head -3000 || true
  grep -A40 -E -- '^panic:' "$1" | head -300 || true
}

echo "== go vet, gofmt"
go vet ./...
go vet -tags ceph,pacific ./...
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then echo "gofmt would change: $bad" >&2; exit 1; fi

echo "== tests"
status=0
go test -count=1 -timeout 20m -v ./... >"$log" 2>&1 || status=$?
grep -E '^(ok|FAIL|--- FAIL|panic:|\s+--- FAIL)' "$log" || true
if [ "$status" != 0 ]; then
  echo "== failures"; failures "$log"
  exit "$status"
fi
skips=$(grep -E -- '--- SKIP' "$log" || true)
if [ -n "$skips" ] && [ "${CI:-}" = true ]; then
  echo "skipped tests are failures under CI=true:" >&2; echo "$skips" >&2; exit 1
fi
passed=$(grep -cE -- '^\s*--- PASS' "$log" || true)

echo "== Ceph RADOS and radosgw (S3): conformance, model and NBD tests on a throwaway cluster"
ARCHIP_TEST_CEPH_CONF=$(scripts/ceph-cluster.sh start "$cephdir")
export ARCHIP_TEST_CEPH_CONF
read -r ARCHIP_TEST_RGW_ENDPOINT ARCHIP_TEST_RGW_CREDENTIALS < <(scripts/ceph-cluster.sh start-rgw "$cephdir")
export ARCHIP_TEST_RGW_ENDPOINT ARCHIP_TEST_RGW_CREDENTIALS
status=0
{ go test -count=1 -timeout 10m -tags ceph,pacific -v ./internal/objstore/rados &&
  go test -count=1 -timeout 10m -tags ceph,pacific -v ./internal/objstore/s3 &&
  go test -count=1 -timeout 10m -tags ceph,pacific -v -run 'S3' ./cmd/archip &&
  go test -count=1 -timeout 10m -tags ceph,pacific -v -run 'ModelRados|Rados|S3' ./internal/volume ./internal/gc ./e2e; } >"$log" 2>&1 || status=$?
grep -E '^(ok|FAIL|--- FAIL|panic:)' "$log" || true
if [ "$status" != 0 ]; then
  failures "$log"
  exit "$status"
fi
if grep -qE -- '--- SKIP' "$log" && [ "${CI:-}" = true ]; then
  echo "skipped tests are failures under CI=true:" >&2; grep -E -- '--- SKIP' "$log" >&2; exit 1
fi
passed=$((passed + $(grep -cE -- '^\s*--- PASS' "$log" || true)))
scripts/ceph-cluster.sh stop "$cephdir" >/dev/null

echo "== race detector (concurrency-heavy packages)"
# internal/volume alone takes 5-15 minutes under the race detector on 2
# cores beside the other packages (its model tests): the timeout leaves
# room for a slow day.
go test -count=1 -race -short -timeout 40m ./internal/objstore/... ./internal/volume ./internal/catalog ./internal/image ./internal/nbd ./internal/daemon ./internal/gc ./internal/lease ./internal/bucket ./internal/frontend/s3fe

# Budgets are execution counts, about 10 s each here, not durations: with a
# duration Go 1.26's fuzz coordinator can report "context deadline exceeded"
# as a failure when the time runs out (a toolchain race fixed in Go 1.27).
echo "== fuzz targets (about 10 s each)"
for target in $(grep -rhoE '^func (Fuzz[A-Za-z0-9]+)' --include='*_test.go' . | awk '{print $2}' | sort -u); do
  pkg=$(grep -rlE "^func $target\(" --include='*_test.go' . | head -1 | xargs dirname)
  case $target in
    FuzzServer) budget=30000x ;; # a whole NBD session per input
    *) budget=150000x ;;
  esac
  go test -run '^$' -fuzz "^$target\$" -fuzztime "$budget" "$pkg" >"$log" 2>&1 || { cat "$log"; exit 1; }
  echo "ok   $target ($pkg)"
done

echo "== benchmarks, once each (numbers: docs/benchmarks.md)"
go test -count=1 -run '^$' -bench . -benchtime 1x ./... 2>&1 | grep -E '^(Benchmark|ok|FAIL)'
SIZE=256M RUNTIME=1 bench/nbd.sh 2>/dev/null
SIZE=256M RUNTIME=1 bench/rados.sh 2>/dev/null
# The provisioning storm, short: fails on any error, never on speed.
bench/storm.sh --short >"$log" 2>&1 || { cat "$log"; exit 1; }
sed -n '/^provisioning storm/,$p' "$log"
# The catalog benchmark, tiny (a few seconds): fails on any error, never on speed.
FILE_SIZES=100 RADOS_SIZES= OPS=2 LISTS=1 RUNS=1 bench/catalog.sh >"$log" 2>&1 || { cat "$log"; exit 1; }

echo "$passed passed, 0 failed"
