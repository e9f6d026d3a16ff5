#!/usr/bin/env bash
# Long fuzzing runs: every libFuzzer harness for SECS seconds (default 300)
# under ASan+UBSan, starting from the seed corpus in tests/fuzz/corpus/.
# New interesting inputs go to var/fuzz/<harness>/ (not the tree); crashes
# are written to var/fuzz/ and must become unit tests once fixed.
set -euo pipefail
secs=${1:-300}
cd "$(dirname "$0")/.."
if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
ninja -C build-fuzz >/dev/null
status=0
for exe in build-fuzz/tests/fuzz/fuzz_*; do
    [ -x "$exe" ] && [ -f "$exe" ] || continue
    name=$(basename "$exe")
    work=var/fuzz/$name
    mkdir -p "$work"
    echo "== $name ($secs s)"
    if ! "$exe" -max_total_time="$secs" -timeout=10 -artifact_prefix=var/fuzz/ "$work" \
        "tests/fuzz/corpus/$name" 2>&1 | tail -3; then
        status=1
    fi
done
exit $status
