# Two commands on a fresh machine: `make run` (set-up + the tutorial experiment) and
# `make test` (set-up + the whole test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -m "not slow"  # CI (.ci/run) runs the slow tests too: make test PYTEST_ARGS=

.PHONY: run test lint bench clean warm warm-background

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[sample,diagram]'
	touch $@

# numba compiles the training loop once per machine (~25 s): in the background for `make run`
# (training starts at once on the loop's numpy copy and switches when it is ready), in the
# foreground for `make test` (the tests assert which code trained).
warm-background: $(VENV)/.installed-run
	(nohup $(BIN)/python -m mnistlab.engine.warm >/dev/null 2>&1 &)

warm: $(VENV)/.installed-dev
	$(BIN)/python -m mnistlab.engine.warm

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

run: warm-background
	$(BIN)/mnistlab train --preset tutorial --dataset mnist --fallback mnist_sample --fallback digits
	@echo ""
	@echo "Next: put mnistlab on your PATH with 'source $(VENV)/bin/activate' (or call $(BIN)/mnistlab), then try"
	@echo "  mnistlab runs                      # the run you just made"
	@echo "  mnistlab serve runs/<run>          # draw digits at http://127.0.0.1:8000"
	@echo "  mnistlab predict runs/<run> my-digit.jpg"
	@echo "  mnistlab train --preset cnn --dataset fashion_mnist   # the next chapter: a convnet"
	@echo "    (batch-normalised convnets, --preset best, train 3.6x faster on TensorFlow:"
	@echo "     $(BIN)/pip install -e '.[tensorflow]' first)"

test: warm
	$(BIN)/ruff check src tests bench examples
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
