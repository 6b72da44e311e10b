"""vLLM's server argument parser and its validation, wherever this vLLM release keeps them.

0.32 has them in ``vllm.entrypoints.launchers.cli_args``; 0.33 moved them to
``vllm.entrypoints.common.cli_args`` (same names and signatures).
"""

from __future__ import annotations

try:  # vLLM 0.32
    from vllm.entrypoints.launchers.cli_args import (  # type: ignore[import-not-found]
        make_arg_parser,
        validate_parsed_serve_args,
    )
except ImportError:  # vLLM 0.33
    from vllm.entrypoints.common.cli_args import (  # type: ignore[import-not-found,no-redef]
        make_arg_parser,
        validate_parsed_serve_args,
    )

__all__ = ["make_arg_parser", "validate_parsed_serve_args"]
