# The README's two commands: `make train` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: train test bench setup data test-tools clean

$(BIN)/nnps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools>=69"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/nnps

# Fashion-MNIST comes from Debian's package where apt exists (works offline of the
# dataset mirrors); elsewhere nnps downloads and verifies it.
data: setup
	@if [ -f $(FASHION) ]; then :; \
	elif command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	else $(BIN)/nnps data download fashion-mnist; fi

# The main job: train 784-500-300-10 on Fashion-MNIST with 2 Ray workers on an embedded
# local Ray (its first steps in-process while Ray starts: the warm start; --no-warm-start
# waits for Ray). A network this wide at batch 1000 is where 2 workers are predicted to keep
# up with one process on 2 cores (784-100-10 was predicted 1.5x slower, and said so).
train: data
	@echo "nnps: training 784-500-300-10 (ReLU, softmax) on Fashion-MNIST with 2 Ray workers on an embedded local Ray"
	$(BIN)/nnps train --data fashion-mnist --hidden 500,300 --activation relu --output softmax \
		--cost cross-entropy --weight-init scaled --optimizer momentum --lr 0.05 --batch-size 1000 \
		--epochs 30 --workers 2 --run-dir runs/fashion-quickstart
	@echo "next: source $(VENV)/bin/activate, then look at the result:"
	@echo "  nnps evaluate runs/fashion-quickstart          # accuracy and confusion matrix on the test set"
	@echo "  nnps inspect runs/fashion-quickstart 0 --out pictures/   # what is inside, as PNGs"
	@echo "  nnps ui runs/fashion-quickstart                # curves, weights and a canvas in the browser"
	@echo "  nnps serve runs/fashion-quickstart             # the network over HTTP"

# The browser test drives Debian's headless Chromium through `nnps ui`'s page; the
# multi-host tests make network namespaces with iproute2 (ip, tc) and firewall them with nftables.
test-tools:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && command -v ip >/dev/null && command -v tc >/dev/null && command -v nft >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver iproute2 nftables; \
	else echo "note: no apt here: the tests need /usr/bin/chromium, /usr/bin/chromedriver, ip, tc and nft"; fi

test: data test-tools
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python bench/core_speed.py

clean:
	rm -rf $(VENV) runs *.egg-info
