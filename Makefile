# metalearn-book: `make book` builds the website, `make test` runs the tests. `make help` lists the rest.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
# The budget (quick | cpu | full): `make book BUDGET=quick`, or METALEARN_BUDGET in the environment.
BUDGET ?= $(or $(METALEARN_BUDGET),cpu)
PORT   ?= 8000
# One output folder per budget, so budgets never share the notebook execution cache.
OUT    := _build/$(BUDGET)
HTML   := $(OUT)/_build/html
QUICK_HTML := _build/quick/_build/html
# -W --keep-going: any Sphinx warning fails the build, after reporting all of them.
# --all: re-read every page (so a warning is never hidden by an incremental build); executed notebooks still
# come from the execution cache, so an unchanged chapter is not re-run.
JB_FLAGS := -W --keep-going --all
# Kernels: use the .venv's own python3 kernel even if the user has another one registered.
JB_ENV = JUPYTER_PATH="$(CURDIR)/$(VENV)/share/jupyter"
# $(call jb_build,BUDGET,OUTPUT FOLDER[,MORE FLAGS]): execute the chapters at BUDGET and build the website.
jb_build = METALEARN_BUDGET=$(1) $(JB_ENV) $(VENV)/bin/jupyter-book build . --path-output $(2) $(JB_FLAGS) $(3)
# What the website is made from: browser-test reuses a quick build whose searchindex.js (written last by
# every build) is newer than all of these.
BOOK_SOURCES := _config.yml _toc.yml book chapters metalearn_core results

ifeq ($(filter $(BUDGET),quick cpu full),)
$(error BUDGET must be quick, cpu or full, not '$(BUDGET)')
endif

.PHONY: help setup book serve test browser-test chromium bench student-book clean distclean

help:
	@echo "make book          build the website (BUDGET=quick|cpu|full, default cpu) into $(OUT)/_build/html"
	@echo "make serve         build, then serve it on http://127.0.0.1:$(PORT)/ (PORT=...)"
	@echo "make test          run the test suite at the quick budget (builds the book too)"
	@echo "make browser-test  check the built website in a real browser (installs Debian's chromium if missing)"
	@echo "make student-book  build the website without exercise solutions into _build/student-$(BUDGET)"
	@echo "make bench         time a meta-step (benchmarks/bench_meta_step.py)"
	@echo "make clean         remove _build/ (distclean: also .venv/)"

setup:
	@bash scripts/setup-env.sh

book: setup
	@echo "== building the book at budget '$(BUDGET)' into $(OUT)"
	$(call jb_build,$(BUDGET),$(OUT))
	@echo
	@echo "The website is at $(HTML)/index.html"
	@echo "Serve it with:  make serve BUDGET=$(BUDGET)   (or: $(PY) -m http.server --bind 127.0.0.1 $(PORT) --directory $(HTML))"

serve: book
	@echo "Serving $(HTML) on http://127.0.0.1:$(PORT)/  (Ctrl-C to stop)"
	$(PY) -m http.server --bind 127.0.0.1 $(PORT) --directory $(HTML)

# The student edition: the same book with every {solution} removed (sphinx-exercise's hide_solutions).
student-book: setup
	$(PY) scripts/student_config.py _build/student-$(BUDGET)/_config.yml $(OUT)/_build/.jupyter_cache
	$(call jb_build,$(BUDGET),_build/student-$(BUDGET),--config _build/student-$(BUDGET)/_config.yml)
	@echo "The student edition is at _build/student-$(BUDGET)/_build/html/index.html"

test: setup
	METALEARN_BUDGET=quick $(JB_ENV) $(PY) -m pytest tests chapters --nbval-lax

# Debian's chromium (playwright drives it; no browser download). apt needs root: run as root or install it yourself.
chromium:
	@if command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "chromium is missing: install it (sudo apt-get install -y chromium fonts-dejavu-core) or run this as root"; exit 1; fi; \
	echo "== installing Debian's chromium"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; \
	command -v chromium

browser-test: setup chromium
	@if [ -f $(QUICK_HTML)/searchindex.js ] && [ -z "$$(find $(wildcard $(BOOK_SOURCES)) -newer $(QUICK_HTML)/searchindex.js -not -path '*/__pycache__*' -print -quit)" ]; then \
	  echo "== reusing the quick build in $(QUICK_HTML) (newer than every source)"; \
	else \
	  echo "== building the book at budget 'quick' into _build/quick"; \
	  $(call jb_build,quick,_build/quick); \
	fi
	METALEARN_BUDGET=quick METALEARN_SITE=$(QUICK_HTML) $(PY) -m pytest tests/browser

bench: setup
	$(PY) benchmarks/bench_meta_step.py

clean:
	rm -rf _build

distclean: clean
	rm -rf $(VENV)
