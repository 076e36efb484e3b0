# One command each, on a fresh machine: `make demo` and `make test`.
# Both create .venv and install what they need (torch as the local CPU wheel).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
LITDATA_PIN ?= litdata==0.2.76
DEMO   ?= build/demo

.PHONY: demo test bench bench-deps bench-detail install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	rm -rf $(DEMO)
	$(PY) -m packer.examples $(DEMO)/src --classes 10 --per-class 60
	$(PY) -m packer build $(DEMO)/src $(DEMO)/shards --shard-size 1MB
	$(PY) -m packer info $(DEMO)/shards
	$(PY) -m packer verify $(DEMO)/shards --quiet
	$(PY) -c "from loaders import IndexedTarDataset; ds = IndexedTarDataset('$(DEMO)/shards', decode='default'); s = ds[0]; print(f'IndexedTarDataset: {len(ds)} samples; ds[0] = {s[\"__key__\"]}: jpg {s[\"jpg\"].size} image, json {s[\"json\"]}')"
	$(PY) -c "from loaders import StreamingTarDataset; ds = StreamingTarDataset('$(DEMO)/shards', seed=0).batched(32, collation_fn=len); print(f'StreamingTarDataset: {len(ds)} batches of up to 32, {sum(ds)} samples in one shuffled epoch')"
	@echo "first members of $(DEMO)/shards/shard-000000.tar:"
	@tar -tvf $(DEMO)/shards/shard-000000.tar | head -n 6
	@ls -l $(DEMO)/shards

test: $(VENV)/.installed
	$(PY) -m pytest -q

# LitData requires torch/torchvision (CUDA builds from the registry), so it
# goes in with --no-deps; the bench extra holds what else it imports.
bench-deps: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m pip install -q --no-deps "$(LITDATA_PIN)"

# Everything side by side in one run; results also in build/bench.{md,json}.
bench: bench-deps
	mkdir -p build
	$(PY) scripts/bench.py --markdown build/bench.md --json build/bench.json

# The per-topic benchmarks (more rounds, LitData, more options).
bench-detail: bench-deps
	$(PY) scripts/bench_pack.py
	$(PY) scripts/bench_indexed.py
	$(PY) scripts/bench_streaming.py

clean:
	rm -rf build $(VENV) .pytest_cache
