# All set-up lives here: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of torch 2.13.0 installs from local disk on our machines; any other spec
# downloads gigabytes. pyproject.toml keeps a range that admits it.
TORCH  := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: test demo install-runtime install-dev default-model clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The runtime only: numpy, onnxruntime, tifffile, click, tqdm, Pillow. No torch.
$(VENV)/.runtime-installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[demo]'
	touch $@

$(VENV)/.dev-installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[cpu,train,export,bmz,napari,big,dev]'
	touch $@

install-runtime: $(VENV)/.runtime-installed
install-dev: $(VENV)/.dev-installed

# The napari tests need no display: Qt renders offscreen. napari's canvas also needs an
# OpenGL context, which the offscreen platform only gets from an X server, so the tests run
# under xvfb-run. It is installed here when missing and we may (root with apt-get, as on
# our machines and CI); elsewhere install it yourself (apt-get install xvfb xauth). Without
# it the widget is tested against napari's headless ViewerModel and the screenshot test is
# skipped with that reason.
system-deps:
	@command -v xvfb-run >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth >/dev/null; } \
	  || echo "note: xvfb-run not available: napari canvas tests will be skipped (apt-get install xvfb xauth)"

test: $(VENV)/.dev-installed system-deps
	QT_QPA_PLATFORM=offscreen $$(command -v xvfb-run >/dev/null 2>&1 && echo xvfb-run -a) \
	  $(BIN)/python -m pytest -q $(PYTEST_ARGS)

DEMO_ARGS ?=
demo: $(VENV)/.runtime-installed
	$(BIN)/hdn-deploy demo -o demo_output $(DEMO_ARGS)

# Re-run the whole recipe of the bundled model: data -> noise model -> training -> package.
default-model: $(VENV)/.dev-installed
	$(BIN)/python -m hdn_deploy.training.default_model --fresh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
