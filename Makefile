# The two commands of the README. Both build .venv/ from nothing: torch==2.13.0 first (the CPU
# build; a plain `torch` requirement would pull several GB of CUDA packages), then the package with
# its ROS (PyPI `ros-*` wheels) and dev extras.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): setup.py setup.cfg pyproject.toml package.xml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[ros,dev]'
	# Type stubs of the TensorRT 10 API, for the API-conformance test; --no-deps because the real
	# TensorRT wheels are not obtainable here.
	$(BIN)/python -m pip install --quiet --no-deps tensorrt-stubs==10.13.0.35.1
	touch $(STAMP)

demo: $(STAMP)
	FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA $(BIN)/cnd-depth demo

lint: $(STAMP)
	$(BIN)/ruff check cnd_depth_ros test benchmarks launch

test: lint
	FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
