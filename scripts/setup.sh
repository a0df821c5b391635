#!/usr/bin/env bash
# One-time setup on a fresh machine: a virtual environment with torch (CPU build, pinned first so that
# no dependency pulls a CUDA build), ltx2train and its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip 2>/dev/null || true
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"
DS_BUILD_OPS=0 pip install -q -e ".[test,deepspeed,memory,tensorboard]"
# Lightricks' reference implementation, test-only: its declared deps include torchaudio (no CPU build
# here); the modules the parity tests use do not need it.
python -c "import ltx_core" 2>/dev/null || pip install -q --no-deps "ltx-core==1.0.0"
# Lightricks' ltx-pipelines, test-only: the inference tests compare our sigma schedules with its constants.
python -c "import importlib.util as u, sys; sys.exit(u.find_spec('ltx_pipelines') is None)" 2>/dev/null || \
  pip install -q --no-deps "ltx-pipelines==1.0.0"
# DiffSynth-Studio, test-only: its LoRA loader is one of the consumers the LoRA tests load our files with.
python -c "import importlib.util as u, sys; sys.exit(u.find_spec('diffsynth') is None)" 2>/dev/null || \
  pip install -q --no-deps "diffsynth==2.1.12"
