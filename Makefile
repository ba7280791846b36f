# Two commands do everything on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo render test test-fast test-cuda bench clean

$(STAMP): requirements.txt requirements-viewer.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt -r requirements-viewer.txt
	touch $(STAMP)

demo: $(STAMP)          ## the main job: IDR reconstruction of the built-in dataset (cpu preset, ~10 min on 2 cores); a rerun resumes or re-exports it
	$(PY) -m apps.idr --config configs/idr/cpu.yaml --resume

render: $(STAMP)        ## a quick sphere-tracing demo: render, mesh and score a built-in scene (seconds)
	$(PY) -m apps.demo --config configs/demo/default.yaml

test: $(STAMP)          ## the whole suite on Taichi's CPU backend
	TAICHI_SDF_ARCH=cpu $(PY) -m pytest -q

test-fast: $(STAMP)     ## the suite without the cases marked slow (app runs, large twin comparisons)
	TAICHI_SDF_ARCH=cpu $(PY) -m pytest -q -m "not slow"

test-cuda: $(STAMP)     ## the same suite on Taichi's CUDA backend with torch CUDA tensors
	TAICHI_SDF_ARCH=cuda $(PY) -m pytest -q

bench: $(STAMP)         ## benchmark tables, each vs its torch twin and installed peers (minutes)
	$(PY) -m bench.sphere_trace
	$(PY) -m bench.soft_raster
	$(PY) -m bench.mesh_sdf
	$(PY) -m bench.ray_march
	$(PY) -m bench.tracers_vs_originals
	$(PY) -m bench.train_step

clean:
	rm -rf $(VENV) outputs .pytest_cache
