# The two front-door commands (see README.md):
#   make demo   install, make a small corpus, run the main job on the embedded default
#   make test   install, run the full test suite
# Both create the virtual environment at .venv in this checkout.

PYTHON ?= python3
VENV := .venv
APT_PACKAGES := espeak-ng sox flite pocketsphinx-testdata
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SOURCES := $(shell find daisy_upstream -type f -not -name '*.pyc' -not -path '*/__pycache__/*') setup.py

.PHONY: demo test install system-packages

install: $(VENV)/.installed

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing; \
	fi

# dependencies: once, and again when setup.cfg changes
$(VENV)/.deps: setup.cfg pyproject.toml | system-packages
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q '.[tasks,test]'
	touch $@

# the package itself (a regular install: it carries the daisy_upstream.pth start-up hook)
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	$(VENV)/bin/python -m pip install -q --no-deps --force-reinstall .
	rm -rf build
	touch $@

test: install
	$(VENV)/bin/python -m pytest -q

demo: install
	$(VENV)/bin/daisy demo
