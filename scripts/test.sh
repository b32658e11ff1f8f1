#!/usr/bin/env bash
# Runs every test tier: lint, type check, unit, integration (real sshd on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
