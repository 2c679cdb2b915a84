# Two commands for a fresh machine: `make demo` (the whole pipeline on the embedded synthetic dataset)
# and `make test` (the pytest suite). Both create .venv in the repo root, install requirements.txt, and install
# this repository in editable mode (pyproject.toml), so every script imports its packages from any directory.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo test bench clean-demo

install: system-deps $(STAMP)

# Headless rendering needs Mesa's EGL; install it when missing and we are allowed to.
system-deps:
	@if ! ldconfig -p | grep -q 'libEGL.so.1' || ! ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 >/dev/null; \
	  else \
	    echo "note: headless rendering needs Mesa EGL (Debian: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)"; \
	  fi; \
	fi

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt >$(VENV)/pip.log 2>&1 \
	  || { grep -v '^WARNING: Location' $(VENV)/pip.log; exit 1; }
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . >>$(VENV)/pip.log 2>&1 \
	  || { grep -v '^WARNING: Location' $(VENV)/pip.log; exit 1; }
	$(PY) -c "import torch, torchvision, trimesh, h5py, pyrender, igl, manifold3d, config, evaluation"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) utils/demo.py

bench: install
	$(PY) bench/preprocessing.py
	$(PY) bench/model.py
	$(PY) bench/loss_terms.py
	$(PY) bench/train_step.py
	$(PY) bench/evaluation_speed.py

clean-demo:
	rm -rf runs/demo
