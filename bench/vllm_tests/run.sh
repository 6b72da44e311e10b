#!/usr/bin/env bash
# vLLM's own scheduler tests (tests/v1/core/test_scheduler.py and test_async_scheduler.py
# of the pinned vLLM's sdist), run twice: with vLLM's classes, and with HyGen's
# substituted (HyGenScheduler / HyGenAsyncScheduler, no offline work). Prints both
# summaries and the tests whose outcome differs; nothing is printed under "differ" when
# every test that passes for stock vLLM passes for HyGen.
#
#   bash bench/vllm_tests/run.sh          # needs PyPI (the sdist, ~47 MB) and the venv
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
VER="$("$PY" -c 'import vllm; print(vllm.__version__.split("+")[0])' 2>/dev/null | tail -1)"
WORK="${WORK:-$(mktemp -d)}"
echo "vLLM $VER; work dir $WORK"
if [ ! -d "$WORK/vllm-$VER/tests" ]; then
  URL="$(curl -fsS -H 'Accept: application/vnd.pypi.simple.v1+json' https://pypi.org/simple/vllm/ |
    "$PY" -c "import json,sys; d=json.load(sys.stdin); print([f['url'] for f in d['files'] if f['filename']=='vllm-$VER.tar.gz'][0])")"
  curl -fsS -o "$WORK/vllm-$VER.tar.gz" "$URL"
  tar -xzf "$WORK/vllm-$VER.tar.gz" -C "$WORK" "vllm-$VER/tests"
fi
cp "$ROOT/bench/vllm_tests/conftest_substitute.py" "$WORK/vllm-$VER/tests/v1/core/conftest.py"
MODEL="$WORK/tiny"
[ -d "$MODEL" ] || "$PY" -c "from pathlib import Path; from hygen_pod.dev.tiny_model import build_tiny_llama; build_tiny_llama(Path('$MODEL'))"
export HYGEN_TINY_MODEL="$MODEL" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cd "$WORK/vllm-$VER"
run() {
  HYGEN_SUBSTITUTE="$1" "$PY" -m pytest -q -p no:kmock -p no:cacheprovider --confcutdir=tests/v1/core \
    tests/v1/core/test_scheduler.py tests/v1/core/test_async_scheduler.py 2>&1 |
    grep -E '^(FAILED|ERROR) |[0-9]+ passed' | sed 's/ - .*//' | sort || true
}
run 0 > "$WORK/stock.txt"
run 1 > "$WORK/hygen.txt"
echo "stock vLLM: $(grep passed "$WORK/stock.txt")"
echo "HyGen:      $(grep passed "$WORK/hygen.txt")"
echo "tests whose outcome differs:"
diff <(grep -v passed "$WORK/stock.txt") <(grep -v passed "$WORK/hygen.txt") || true
