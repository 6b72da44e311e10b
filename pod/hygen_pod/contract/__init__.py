"""Documents shared by the pod, the scheduler plugin and the operator.

Pydantic models and plain files only: no numpy, scipy, vllm or torch, so the
operator (which imports this package alone) stays light.
"""
