# The commands a person types. Each installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages: sqlite-vss links against libblas3, liblapack3 and libgomp1; openai-whisper and
# yt-dlp call ffmpeg; unstructured converts epub/odt/rtf/rst/org through pandoc and sniffs types with
# libmagic; scanned pages and images are read by tesseract (tesseract-ocr, -eng) after pdftoppm
# (poppler-utils) renders them; the tests speak audio with espeak-ng, drive chromium, and read real
# documentation: the Sphinx-built Python tutorial (python3-doc) and the Bash manual PDF (bash-doc).
DEBS := libblas3 liblapack3 libgomp1 ffmpeg pandoc libmagic1 tesseract-ocr tesseract-ocr-eng poppler-utils \
	espeak-ng chromium python3-doc bash-doc
# .doc/.ppt/.xls are converted by LibreOffice; the tests convert a .doc, which needs only Writer.
# Installed without recommends: ~250 MB instead of the desktop suite.
DEBS_NO_RECOMMENDS := libreoffice-writer-nogui
# x86-64 compilers only know these flags (see the llama-cpp-python build below).
NO_AMX := $(if $(filter x86_64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test bench system-packages apt clean

demo: $(STAMP)
	@rm -f demo/course.db demo/course.db-wal demo/course.db-shm
	@mkdir -p demo
	$(BIN)/kb ingest demo/course.db corpora/hydrology
	@echo
	$(BIN)/kb search demo/course.db "How long does water stay in the atmosphere?" -k 3
	@echo
	$(BIN)/kb search demo/course.db "How big is the funnel of a standard rain gauge?" -k 2
	@echo
	$(BIN)/kb search demo/course.db "Which method is used to build a river's rating curve?" -k 1
	@echo
	$(BIN)/kb ask demo/course.db "How wide is the funnel on the standard UK Met Office rain gauge?"
	@echo
	$(BIN)/kb ask demo/course.db "How much energy does it take to melt one kilogram of ice?"
	@echo
	$(BIN)/kb ask demo/course.db "How do I calculate the monthly repayment on a mortgage?"

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_foundation.py
	$(BIN)/python benchmarks/bench_ask.py
	$(BIN)/python benchmarks/bench_quality.py
	$(BIN)/python benchmarks/bench_course.py
	$(BIN)/python benchmarks/bench_transcribe.py
	$(BIN)/python benchmarks/bench_scale.py

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# The distribution was named kb until it took coursekb (kb on PyPI is another project): an old
	@# install would register the `kb` command and the Datasette plugin a second time.
	$(BIN)/pip uninstall --quiet --yes kb 2>/dev/null || true
	@# llama-cpp-python compiles llama.cpp here, for this CPU (-march=native). Where the CPU lists
	@# AMX (recent Xeons), that build's AMX matmul faults at ldtilecfg (SIGSEGV at the first token)
	@# on virtual machines that do not hand AMX state to guests (seen here), so the AMX instructions
	@# are left out; AVX-512 stays (prompts read 1.4x faster than an AVX2-only build, measured).
	CFLAGS="$(NO_AMX) $${CFLAGS:-}" CXXFLAGS="$(NO_AMX) $${CXXFLAGS:-}" $(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

system-packages:
	@$(MAKE) --no-print-directory apt PACKAGES="$(DEBS)" APT_FLAGS=""
	@$(MAKE) --no-print-directory apt PACKAGES="$(DEBS_NO_RECOMMENDS)" APT_FLAGS="--no-install-recommends"

apt:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if ! command -v apt-get >/dev/null; then echo "Install these Debian packages (or your system's equivalents):$$missing"; \
		elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(APT_FLAGS) $$missing; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq $(APT_FLAGS) $$missing; fi; \
	fi

clean:
	rm -rf $(VENV) demo *.egg-info
