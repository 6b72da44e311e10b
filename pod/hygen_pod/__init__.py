"""HyGen serving pod: latency predictor, offline queue and the vLLM scheduler plugin.

Policy modules here import neither vllm nor torch; `hygen_pod.vllm_adapter.scheduler` is the
one adapter that binds them to vLLM.
"""

__version__ = "0.1.0"
