# Two commands on a fresh machine: `make run` (set-up + the tutorial experiment) and
# `make test` (set-up + the whole test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -m "not slow"  # CI (.ci/run) runs the slow tests too: make test PYTEST_ARGS=

.PHONY: run test lint bench clean warm warm-background warm-keras-background

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The compiled engine's own dependencies (numpy, numba, threadpoolctl, as pyproject.toml pins them)
# and mnistlab itself go in first, so that numba can compile the kernels (engine/warm.py: ~12 s
# for the MLP loop, ~150 s more for the convnet engine, one core, SCHED_IDLE) while pip installs
# the rest: the first `mnistlab train` then finds the compiled loop ready.
ENGINE_DEPS = $(BIN)/python -c "import re, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print(' '.join(d for d in deps if re.split('[^A-Za-z0-9_.-]', d)[0] in ('numpy', 'numba', 'threadpoolctl')))"

$(VENV)/.installed-engine: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $$($(ENGINE_DEPS))
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Then mnistlab's own dependencies, after which Keras' first-run compilations can be cached
# (warm-keras-background, ~7 s) while pip installs the extras.
$(VENV)/.installed-core: pyproject.toml | $(VENV)/.installed-engine
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-run: pyproject.toml | $(VENV)/.installed-core
	$(BIN)/pip install --quiet -e '.[sample,diagram]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/.installed-core
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

# Compiling in the background: `make run` trains at once (on the loop's numpy copy if the compiled
# loop is not ready yet, switching when it is: the same bits); `make test` waits for it before
# the tests (they assert which code trained): `warm` takes the compile lock, so it waits for the
# background process, then finds every kernel cached.
warm-background: $(VENV)/.installed-engine
	(nohup $(BIN)/python -m mnistlab.engine.warm >/dev/null 2>&1 &)

warm: warm-background $(VENV)/.installed-dev
	$(BIN)/python -m mnistlab.engine.warm

# JAX's persistent compilation cache: what the first run's model build, test-set prediction and
# predictor check compile (~2.5 s of that run); does nothing once done for these versions.
warm-keras-background: $(VENV)/.installed-core
	(nohup $(BIN)/python -m mnistlab.engine.warm keras >/dev/null 2>&1 &)

run: warm-background warm-keras-background $(VENV)/.installed-run
	$(BIN)/mnistlab train --preset tutorial --dataset mnist --fallback mnist_sample --fallback digits
	@echo ""
	@echo "Next: put mnistlab on your PATH with 'source $(VENV)/bin/activate' (or call $(BIN)/mnistlab), then try"
	@echo "  mnistlab runs                      # the run you just made"
	@echo "  mnistlab serve runs/<run>          # draw digits at http://127.0.0.1:8000"
	@echo "  mnistlab predict runs/<run> my-digit.jpg"
	@echo "  mnistlab train --preset cnn --dataset fashion_mnist   # the next chapter: a convnet"
	@echo "  mnistlab train --preset best --dataset fashion_mnist  # the most accuracy in 10 minutes"
	@echo "    (batch-normalised convnets train 3.6x faster on TensorFlow:"
	@echo "     $(BIN)/pip install -e '.[tensorflow]' first)"

test: warm
	$(BIN)/ruff check src tests bench examples
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
