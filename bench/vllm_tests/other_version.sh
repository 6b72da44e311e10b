#!/usr/bin/env bash
# HyGen's vLLM-facing code against another vLLM release than the pinned one, without a GPU:
# the release's wheel is unpacked beside the venv (its Python only: no CPU kernels ship in
# the GPU wheel, so no model runs) and put first on the path, with the CPU platform forced.
#   1. every vLLM name the pod imports resolves, with the signatures it calls;
#   2. the async/sync scheduler harness tests (test_async_scheduler.py, test_steady_carry.py,
#      test_shared_prefix_starts.py, test_prefix_hits.py);
#   3. vLLM's own scheduler tests of that release, stock and with HyGen substituted (run.sh).
#
#   bash bench/vllm_tests/other_version.sh 0.33.0     # ~340 MB download, ~5 minutes
set -euo pipefail
VER="${1:?usage: other_version.sh VERSION}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="$ROOT/.venv/bin/python"
WORK="${WORK:-${TMPDIR:-/tmp}/hygen-vllm-$VER}"
mkdir -p "$WORK"
if [ ! -d "$WORK/site/vllm" ]; then
  "$PY" -m pip download -q "vllm==$VER" --no-deps --only-binary=:all: -d "$WORK"
  mkdir -p "$WORK/site" && (cd "$WORK/site" && unzip -q -o "$WORK"/vllm-"$VER"-*.whl)
  # dependencies the release added that the pinned one's venv lacks (imports only)
  "$PY" -m pip install -q --target "$WORK/extra" orjson
fi
export PYTHONPATH="$WORK/site:$WORK/extra" VLLM_TARGET_DEVICE=cpu
cd "$ROOT"
echo "== 1. the pod's vLLM imports"
"$PY" bench/vllm_tests/imports_check.py 2>&1 | grep -E '^(vLLM|vllm\.|parsed)'
echo "== 2. scheduler harness"
"$PY" -m pytest -q -p no:cacheprovider tests/integration/test_async_scheduler.py \
  tests/integration/test_steady_carry.py tests/integration/test_shared_prefix_starts.py \
  tests/integration/test_prefix_hits.py \
  2>&1 | tail -1
echo "== 3. vLLM's own scheduler tests"
PY="$PY" WORK="$WORK" bash bench/vllm_tests/run.sh
