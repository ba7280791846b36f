# Two commands do everything on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-cuda bench lint clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)          ## render the built-in scene (until the IDR app is the main job)
	$(PY) -m apps.demo --config configs/demo/default.yaml

test: $(STAMP)          ## the whole suite on Taichi's CPU backend
	TAICHI_SDF_ARCH=cpu $(PY) -m pytest -q

test-cuda: $(STAMP)     ## the same suite on Taichi's CUDA backend with torch CUDA tensors
	TAICHI_SDF_ARCH=cuda $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) outputs .pytest_cache
