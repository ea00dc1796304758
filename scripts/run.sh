#!/usr/bin/env bash
# The embedded default, end to end on this machine: set up, export real teacher vectors (all-MiniLM-L6-v2 +
# all-mpnet-base-v2, 1152-d) for a built-in corpus, then distil a student from them.
# Re-running resumes: finished exports and checkpoints are reused, nothing is overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --teachers
RUN_DIR=${RUN_DIR:-runs/default}
.venv/bin/python -m embed_jax.teachers.export --config=configs/teachers.py --config.output_dir="$RUN_DIR/records" "$@"
# 256 validation texts from further down the same corpus order: the held-out loss curve of every stage.
.venv/bin/python -m embed_jax.teachers.export --config=configs/teachers.py:eval --config.output_dir="$RUN_DIR/eval_records"
.venv/bin/python -m embed_jax.main --config=configs/distill.py --config.data.records_dir="$RUN_DIR/records" \
  --config.data.eval_records_dir="$RUN_DIR/eval_records" --workdir="$RUN_DIR/train"
