# The operator image: hygen-operator (kopf) and the dispatcher Job command. No engine.
# Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/hygen/hygen-operator:0.1.0 .
FROM python:3.11-slim
RUN useradd --uid 10001 --create-home hygen
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pod ./pod
COPY operator ./operator
RUN pip install --no-cache-dir ".[operator]" && rm -rf /src
USER 10001
WORKDIR /home/hygen
CMD ["hygen-operator", "run"]
