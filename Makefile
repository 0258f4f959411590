# The two front-door commands (see README.md):
#   make demo   install, make a small corpus, run the main job on the embedded default
#   make test   install, run the full test suite
# Both create the virtual environment at .venv in this checkout. For CI, make test-current: the
# suite again on the current stack, in .venv-current.

PYTHON ?= python3
VENV := .venv
APT_PACKAGES := espeak-ng sox flite pocketsphinx-testdata
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SOURCES := $(shell find daisy_upstream s3prl_configs -type f -not -name '*.pyc' -not -path '*/__pycache__/*') setup.py

.PHONY: demo test test-current lint install system-packages embedded

install: $(VENV)/.installed

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing; \
	fi

# dependencies: once, and again when setup.cfg or the pins change. setup.cfg holds ranges
# (docs/install.md); the default stack is pinned by .ci/constraints-default.txt (torch 2.8.0,
# torchaudio 2.8.0, s3prl 0.4.18)
PINS := -c .ci/constraints-default.txt
$(VENV)/.deps: setup.cfg pyproject.toml .ci/constraints-default.txt | system-packages
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q $(PINS) '.[s3prl,tasks,test]'
	# ESPnet's S3prlFrontend (tests/integration/test_espnet.py): ESPnet without its dependencies
	# (one of them declares a git URL, which pip refuses), then the few its frontend imports
	$(VENV)/bin/python -m pip install -q --no-deps espnet==202511
	$(VENV)/bin/python -m pip install -q $(PINS) '.[espnet]'
	touch $@

# the package itself (a regular install: it carries the daisy_upstream.pth start-up hook)
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	$(VENV)/bin/python -m pip install -q --no-deps --force-reinstall .
	rm -rf build
	touch $@

test: install
	$(VENV)/bin/python -m pytest -q

# the same suite on the current stack (torch 2.11.0, torchaudio 2.11.0, espnet-s3prl), in
# .venv-current, installed as a user has it and then this project by a plain pip install
test-current:
	bash .ci/current-stack.sh
	.venv-current/bin/python -m pytest -q

# ruff's formatter and linter (pyproject.toml), as .ci/run checks them
lint: install
	$(VENV)/bin/ruff format --check daisy_upstream tests setup.py
	$(VENV)/bin/ruff check daisy_upstream tests setup.py

demo: install
	$(VENV)/bin/daisy demo

# Re-make the embedded checkpoint (daisy_upstream/resources/daisy_tiny_hubert.pt): pretraining
# (hours on 2 CPU cores; resumable: run it again), stage 1 on the train split, calibration on
# the held-out dev split, fp16 storage, provenance recorded in the checkpoint. The committed
# state in train_state/pretrain_tiny is finished, so this re-derives the checkpoint from it;
# 'make embedded PRETRAIN_STATE=runs/pretrain_state' pretrains from scratch instead.
PRETRAIN_STATE ?= train_state/pretrain_tiny
PRETRAIN_CORPUS := runs/corpus_pretrain
EMBEDDED := daisy_upstream/resources/daisy_tiny_hubert.pt
embedded: install
	$(VENV)/bin/daisy pretrain-tiny --corpus $(PRETRAIN_CORPUS) --corpus-hours 3 --corpus-seed 0 \
	  --steps-iter1 2600 --steps-iter2 2300 --noise-prob 0.5 --state-dir $(PRETRAIN_STATE) \
	  --out runs/pretrain_tiny/hubert_tiny.pt --threads 1 --seed 0
	rm -rf runs/stage1_embedded  # stage 1 from a fresh start (minutes), never a stale state
	$(VENV)/bin/daisy train-branches -k runs/pretrain_tiny/hubert_tiny.pt \
	  --audio $(PRETRAIN_CORPUS)/asr/LibriSpeech/train-clean-100 \
	  --heldout-audio $(PRETRAIN_CORPUS)/asr/LibriSpeech/dev-clean \
	  --epochs 3 --batch-seconds 20 --lr 2e-3 --lr-schedule linear --noise-prob 0.5 --seed 0 --threads 2 \
	  --eval-every 100 --work-dir runs/stage1_embedded --fp16 --force --out $(EMBEDDED)
