#!/usr/bin/env bash
# Creates .venv with the CPU build of torch (pinned first: an unpinned torch pulls a CUDA build)
# and edgespec with its test tools and the llama.cpp engine (built from source once, ~8 minutes on
# 2 cores; pip keeps the wheel, so later runs take seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
echo "installing edgespec (the first time builds llama.cpp: about 8 minutes on 2 cores) ..."
.venv/bin/python -m pip install -q -e '.[test,llamacpp]'
