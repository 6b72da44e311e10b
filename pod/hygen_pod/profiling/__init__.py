"""Profiling and simulation: the SLO search, the discrete-event simulator, GPU
kernel oracles and the benchmark traces.
"""
