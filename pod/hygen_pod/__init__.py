"""HyGen serving pod: the vLLM scheduler plugin, the pod server and profiling.

Sub-packages, top to bottom (each imports only those below; docs/architecture.md):
``cli``, ``dev``, ``vllm_adapter`` (the only code importing vllm/torch), ``server`` |
``profiling``, ``policy``, ``contract`` (documents the operator shares).
"""

__version__ = "0.1.0"
