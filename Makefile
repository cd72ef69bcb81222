# The gateway's everyday commands. Each target sets up what it needs (a virtualenv in .venv).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install native serve test test-pure lint lock bench bench-quick bench-peers clean faults soak

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py native/*.pyx
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	$(MAKE) native
	touch $@

native:
	$(PY) setup.py --quiet build_ext --inplace

serve: install
	$(VENV)/bin/gateway serve $(ARGS)

test: install
	bash tests/system_deps.sh
	$(PY) -m pytest -W error $(PYTEST_ARGS)

# The same suite with the native extension disabled (the pure-Python twins).
test-pure: install
	GATEWAY_NO_EXTENSIONS=1 GATEWAY_STRICT_NATIVE=0 $(PY) -m pytest -W error tests/unit $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check gateway tests benchmarks setup.py
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict --follow-imports=silent gateway/pipeline  # the spine: no untyped value
	$(PY) tests/import_cycles.py gateway

# requirements.lock (used by the Dockerfile): the runtime closure pinned at the versions in the venv,
# with the hashes PyPI publishes for every file of each version.
lock: install
	$(PY) -m pip freeze --exclude-editable | grep -v '^gateway' > $(VENV)/constraints.txt
	$(PY) -m piptools compile --quiet --allow-unsafe --generate-hashes --strip-extras --no-emit-index-url \
		--no-emit-find-links --no-header --no-annotate --constraint=$(VENV)/constraints.txt \
		--output-file=requirements.lock pyproject.toml
	sed -i '1i # The runtime dependencies with hashes, for the Dockerfile. Regenerate: make lock' requirements.lock

clean:
	rm -rf build dist *.egg-info gateway/**/*.so native/*.c .pytest_cache .mypy_cache

-include Makefile.bench

# The fault suite (tests/faults/, docs/faults.md): the short form runs inside `make test`; this is
# the full form (every scenario its full length), figures appended to faults-figures.txt (gitignored).
faults: install
	bash tests/system_deps.sh
	GATEWAY_FAULTS=full GATEWAY_FAULTS_FIGURES=$(CURDIR)/faults-figures.txt \
		$(PY) -m pytest -W error -q -o timeout=1800 tests/faults tests/e2e/test_cluster_e2e.py $(PYTEST_ARGS)

# The soak (benchmarks/soak/run.py): SOAK_S seconds (600; SOAK_S=3600 for the hour) of a steady mix of
# ordinary, streamed and hostile requests at SOAK_RATE req/s against a stack of its own (company
# configuration, mock upstream); fails if RSS or open descriptors grow after the warm-up. Writes
# benchmarks/soak/results.md and soak.png. SOAK_ARGS passes options through (--workers, --sample-s).
SOAK_S ?= 600
SOAK_RATE ?= 40
SOAK_ARGS ?=
soak: install
	bash tests/system_deps.sh
	nice -n 10 $(PY) -m benchmarks.soak.run --seconds $(SOAK_S) --rate $(SOAK_RATE) $(SOAK_ARGS)
