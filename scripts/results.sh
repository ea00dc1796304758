#!/usr/bin/env bash
# docs/RESULTS.md end to end: teacher records → MiniLM student (stages 1–3) and a 3-layer student → evaluation of
# teachers and students on the hold-out → the student exported as a sentence-transformers folder.
# N texts (default 11,264 = 11 shards, what docs/RESULTS.md used); REUSE=FOLDER copies finished shards of another export (docs/data.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --teachers
PY=.venv/bin/python
N=${N:-11264}
OUT=${OUT:-runs/results}
TEACHERS=(--config.teachers.minilm.max_seq_length=0 --config.teachers.mpnet.max_seq_length=0)
$PY -m embed_jax.teachers.export --config=configs/teachers.py --config.corpus.max_texts="$N" "${TEACHERS[@]}" \
  --config.output_dir="$OUT/records" --config.reuse_from="${REUSE:-}"
$PY -m embed_jax.teachers.export --config=configs/teachers.py:eval "${TEACHERS[@]}" --config.output_dir="$OUT/eval_records"
for variant in "" small; do
  $PY -m embed_jax.main --config="configs/results.py${variant:+:$variant}" --workdir="$OUT/train${variant:+_$variant}" \
    --config.data.records_dir="$OUT/records" --config.data.eval_records_dir="$OUT/eval_records"
done
$PY -m embed_jax.eval --out="$OUT/eval" --model=asset:all-MiniLM-L6-v2 --model=asset:all-mpnet-base-v2 \
  --model=concat:asset:all-MiniLM-L6-v2+asset:all-mpnet-base-v2 --model="$OUT/train" --model="$OUT/train_small"
$PY -m embed_jax.convert.hf --workdir="$OUT/train" --out="$OUT/student" --eval_json="$OUT/eval/results.json" --overwrite
