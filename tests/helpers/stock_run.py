"""Run a request script on a stock-scheduler engine in a fresh process; print JSON.

Used to compare the plugin with stock vLLM without two engines in one process.
Usage: python -m tests.helpers.stock_run MODEL_DIR REQUESTS_JSON OUT_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    model, reqs_path, out_path = sys.argv[1:4]
    from vllm import LLM

    from tests.helpers.engine import Harness, Req, engine_kwargs
    from tests.helpers.recording import RecordingStockScheduler

    llm = LLM(**engine_kwargs(Path(model), RecordingStockScheduler))
    h = Harness(llm)
    reqs = [Req(**r) for r in json.loads(Path(reqs_path).read_text())]
    outputs = h.run(reqs)
    Path(out_path).write_text(json.dumps({"outputs": outputs, "steps": h.scheduler.steps}))


if __name__ == "__main__":
    main()
