# Every target sets itself up on a fresh machine: .venv is created and the project installed
# (with its test tools and oracles) when missing or when pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium

.PHONY: demo test test-fast bench docs clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@# the kernel the example notebooks run on (tests/test_notebooks.py): this venv's Python
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name 'Python 3 (tailscope)' > /dev/null
	@# powerlaw 2.0.0 beside the pinned 1.5, for the test that WeightWatcher fails under it
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--target .cache/powerlaw2 --upgrade powerlaw==2.0.0
	@# gptqmodel 7.6.0 (it pins numpy 2.2, so not in the dev extra), the packer and dequantizer
	@# the GPTQ/AWQ tests compare with (tests/sources/test_quantized.py); its sdist builds no
	@# extension (its CUDA/CPU kernels compile at first use, which the tests never reach); pypcre
	@# compiles a small C extension against the system libpcre2-8 (about 50 s in all on 2 cores)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--target .cache/gptqmodel --upgrade gptqmodel==7.6.0 defuser==0.0.28 device_smi==0.5.7 \
		logbar==0.4.15 pypcre==0.6.4 tokenicer==0.0.14
	@touch $@

demo: $(STAMP)
	$(BIN)/tailscope demo

# the report tests open the HTML report in headless Chromium (Debian's package)
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
			> .chromium-install.log 2>&1 || { cat .chromium-install.log; exit 1; }; \
	else echo "the report tests need Chromium: apt-get install chromium"; exit 1; fi

# the whole suite, and the CI command; prints its 15 slowest tests
test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check src tests bench examples docs
	$(BIN)/python -m pytest -q --durations=15

# the development loop: the tests not marked slow (no notebook, no Chromium), every module of
# src/tailscope touched, under 3 minutes on 2 cores
test-fast: $(STAMP)
	$(BIN)/ruff check src tests bench examples docs
	$(BIN)/python -m pytest -q -m "not slow" --durations=15

# the documentation site into docs/_build/html (the notebooks executed once, then cached in
# .cache/jupyter-cache; TAILSCOPE_DOCS_NB=off renders them without running them)
docs: $(STAMP)
	$(BIN)/python -m sphinx -b html -W --keep-going docs docs/_build/html
	@echo "open docs/_build/html/index.html"

bench: $(STAMP)
	$(BIN)/python bench/fit_speed.py
	$(BIN)/python bench/analyze_speed.py
	$(BIN)/python bench/rank_speed.py
	$(BIN)/python bench/zoo_speed.py --blocks 1

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis docs/_build docs/reference/api docs/examples
