"""The adapter that binds HyGen's policy to vLLM: the only place that imports vllm or torch.

``scheduler.HyGenScheduler`` is the ``--scheduler-cls`` plugin; ``engine`` builds and
drives an in-process engine for the CLI, the demo and the profiler.
"""
