# The GPU serving pod: vLLM's official image plus the HyGen scheduler, pod server and the
# profiling traces. The vLLM version must match the pin in pyproject.toml (the scheduler
# plugin subclasses vLLM's v1 Scheduler).
# Build from the repository root, with the team's data folder as a named context:
#   docker build -f docker/pod-gpu.Dockerfile --build-context data=../shared/data \
#     -t ghcr.io/hygen/hygen-pod:0.1.0 .
FROM vllm/vllm-openai:v0.32.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pod ./pod
COPY operator ./operator
# vLLM and torch come from the base image; install only our other dependencies.
RUN pip install --no-cache-dir --no-deps . \
 && pip install --no-cache-dir fastapi uvicorn python-multipart prometheus-client httpx pyyaml \
 && rm -rf /src
COPY --from=data azure-llm-trace-2023/AzureLLMInferenceTrace_conv.csv /opt/hygen/data/azure-llm-trace-2023/
COPY --from=data vidur/processed_traces/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv \
     /opt/hygen/data/vidur/processed_traces/
ENV HYGEN_DATA=/opt/hygen/data
# The operator runs `hygen-pod profile` (init container) and `hygen-pod serve`.
ENTRYPOINT []
CMD ["hygen-pod", "serve", "--help"]
