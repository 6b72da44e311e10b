"""Import a script from bench/ (not a package) as a module, for the tests of bench scripts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` (``name`` may name a subfolder: ``gpu_calibration/time_steps``),
    run once and registered as ``<name>_bench``, with ``/`` as ``_``."""
    module_name = f"{name.replace('/', '_')}_bench"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, BENCH / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no bench script {name!r} in {BENCH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
