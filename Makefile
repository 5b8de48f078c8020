# Two commands on a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU build pinned for CI and tests (a CPU wheel is cached on the build machines);
# users with GPUs install the torch build for their card before `make setup`.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test bench clean browser

$(STAMP): pyproject.toml requirements.txt requirements-dev.txt requirements-web.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_PIN)"
	$(BIN)/pip install --quiet -e ".[dev,web]"
	touch $(STAMP)

setup: $(STAMP)

# sample corpus -> preprocessing -> a short joint training run -> a retrieval query with a picture
demo: setup
	$(BIN)/python dataset/dxf_process.py
	$(BIN)/python joint_main.py --epochs 30 --k_folds 2 --fold 0 --GF_batch_size 4
	$(BIN)/python SimDeepDXF.py --gallery data/DXF --query "data/DXF/QFN-a_rev0.dxf" --topk 5 \
		--render logs/demo_retrieval.png
	@echo
	@echo "Search the sample gallery in your browser (http://127.0.0.1:8000/, Ctrl-C stops it):"
	@echo "  $(BIN)/python SimDeepDXF.py --serve --gallery data/DXF"

# the system's headless Chromium for the browser test of the search page, and a font with Chinese
# glyphs for its pictures (Debian's packages; only as root and only when chromium is missing:
# elsewhere that test is skipped and says why)
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and chromium-driver for the browser test"; \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver fonts-wqy-zenhei >/dev/null) \
			|| echo "warning: could not install chromium: the browser test will be skipped"; \
	fi

test: setup browser
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/bench_preprocess.py

clean:
	rm -rf data/GF data/DeepDXF data/manifest.csv logs/*/ checkpoints/*/
