# The two entry points of the README. Both set everything up first (scripts/setup.sh).
.PHONY: demo test lint setup bench

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

test: setup
	bash scripts/test.sh

lint: setup
	.venv/bin/ruff check src tests
	.venv/bin/mypy

bench: setup
	.venv/bin/python bench/run.py
