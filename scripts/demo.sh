#!/usr/bin/env bash
# `make demo`: boot a 3-node lab and run kubexm's main job on it, as far as this machine allows.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/kubexm lab up --nodes 3
lab_file="${KUBEXM_LAB_HOME:-${KUBEXM_HOME:-$HOME/.kubexm}/lab}/lab/lab.yaml"
# Everything before Kubernetes itself runs for real: preflight, OS, etcd, container runtime.
.venv/bin/kubexm create cluster -f "$lab_file" --yes --skip-tags kubernetes,addons
echo
echo "Kubernetes server binaries (kubeadm, kubelet) cannot be installed on this machine kind."
echo "The steps a real run would take next, per node and in order:"
.venv/bin/kubexm create cluster -f "$lab_file" --dry-run --offline --tags kubernetes,addons
