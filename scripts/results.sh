#!/usr/bin/env bash
# docs/RESULTS.md end to end: teacher records → MiniLM student (stages 1–3) and a 3-layer student → evaluation of
# teachers and students on the hold-out → the student exported as a sentence-transformers folder.
# 100,000 training texts (what docs/RESULTS.md used; the validation texts start right after them), ~70 min of
# all-mpnet-base-v2 on this 2-core CPU; REUSE=FOLDER copies finished shards of another export (docs/data.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --teachers
PY=.venv/bin/python
OUT=${OUT:-runs/results}
TEACHERS=(--config.teachers.minilm.max_seq_length=0 --config.teachers.mpnet.max_seq_length=0)
$PY -m embed_jax.teachers.export --config=configs/teachers.py --config.corpus.max_texts=100000 "${TEACHERS[@]}" \
  --config.output_dir="$OUT/records100k" --config.reuse_from="${REUSE:-}"
$PY -m embed_jax.teachers.export --config=configs/teachers.py:eval "${TEACHERS[@]}" --config.output_dir="$OUT/eval_records"
for variant in "" small; do
  $PY -m embed_jax.main --config="configs/results.py${variant:+:$variant}" --workdir="$OUT/train100k${variant:+_$variant}" \
    --config.data.records_dir="$OUT/records100k" --config.data.eval_records_dir="$OUT/eval_records"
done
$PY -m embed_jax.eval --out="$OUT/eval" --model=asset:all-MiniLM-L6-v2 --model=asset:all-mpnet-base-v2 \
  --model=concat:asset:all-MiniLM-L6-v2+asset:all-mpnet-base-v2 --model="$OUT/train100k" --model="$OUT/train100k_small"
$PY -m embed_jax.convert.hf --workdir="$OUT/train100k" --out="$OUT/student" --eval_json="$OUT/eval/results.json" --overwrite
