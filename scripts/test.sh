#!/usr/bin/env bash
# Runs every test tier: lint, type check, unit, integration (real sshd), lab (real systemd nodes), and the
# benchmark harness in its smoke size (5 hosts, one iteration: it keeps the harness working, it times nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/mypy bench
.venv/bin/python -m pytest -q "$@"
.venv/bin/python bench/run.py --smoke
