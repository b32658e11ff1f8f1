#!/usr/bin/env bash
# The README's main command: boot a 3-node lab on this machine (real Debian nodes with systemd and
# sshd) and run `kubexm create cluster` on it. Stop the lab with `.venv/bin/kubexm lab down`.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/kubexm lab up --nodes 3
lab_file="${KUBEXM_LAB_HOME:-${KUBEXM_HOME:-$HOME/.kubexm}/lab}/lab/lab.yaml"
.venv/bin/kubexm create cluster -f "$lab_file" --yes
