# physeg: the two commands of README.md.
#   make paper   install (first time), execute every notebook on $(PROFILE), build the site
#   make test    install (first time), unit tests + smoke notebook chain + site + browser test
#
# Everything installs from this repository's own files into .venv. torch is
# installed first from the pinned CPU wheel (torch==2.13.0) and kept pinned with
# constraints.txt, so no dependency can pull a multi-GB CUDA build. On a machine
# that already has a GPU build of torch, use `make paper VENV_FLAGS=--system-site-packages`
# or install the project into that environment yourself (see README).

PYTHON ?= python3.11
VENV ?= .venv
PROFILE ?= demo
TORCH_SPEC ?= torch==2.13.0
VENV_FLAGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.physeg-installed

.PHONY: paper test install browser clean help

help:
	@sed -n '2,4p' Makefile

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(STAMP)

browser:
	-bash site/install_browser.sh

paper: $(STAMP)
	$(PY) -m physeg.reproduce.runner --profile $(PROFILE)

test: $(STAMP) browser
	$(PY) -m pytest -q --timeout=1500

clean:
	rm -rf _build
