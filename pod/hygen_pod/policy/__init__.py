"""HyGen's engine-free scheduling policy: batch shapes, the latency predictor,
phase-2 admission, the offline queue and rate limits.

Used unchanged by the vLLM plugin and by the simulator.
"""
