#!/usr/bin/env bash
# The README's main command: create a cluster on the built-in default (this machine, over the
# local connection) as a dry run: real Greeting and PreflightChecks, and the plan of the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/kubexm create cluster --dry-run
