#!/usr/bin/env bash
# The embedded default, end to end on this machine: set up, export real teacher vectors (all-MiniLM-L6-v2 +
# all-mpnet-base-v2, 1152-d) for a built-in corpus, then distil a student from them.
# Re-running resumes: finished exports and checkpoints are reused, nothing is overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --teachers
RUN_DIR=${RUN_DIR:-runs/default}
.venv/bin/python -m embed_jax.teachers.export --config=configs/teachers.py --config.output_dir="$RUN_DIR/records" "$@"
if [ -f configs/distill.py ]; then
  .venv/bin/python -m embed_jax.main --config=configs/distill.py --config.data.records_dir="$RUN_DIR/records" \
    --workdir="$RUN_DIR/train"
else
  echo "[run] teacher records are in $RUN_DIR/records. Training (embed_jax.main) is not built yet: this job ends after the export."
fi
