#!/usr/bin/env bash
# Installs edgespec and runs the demo: a cloud process with the 1.5B target, an edge with the
# 0.5B draft, the same prompt in spec, cloud and edge mode, and a table of what was measured.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/edgespec demo "$@"
