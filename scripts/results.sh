#!/usr/bin/env bash
# docs/RESULTS.md end to end: teacher records → MiniLM student (stages 1–3) and a 3-layer student → evaluation of
# teachers and students on the hold-out (symmetric, asymmetric and quantised rows) → the student exported as a
# sentence-transformers folder → its encoding speed against all-MiniLM-L6-v2.
# 150,000 training texts of every built-in source (configs/results.py): the export runs as two worker processes of
# one torch thread each (docs/data.md: the 2-core CPU's fastest split), ~1 h on an idle machine. Rerunning resumes
# every step; REUSE=FOLDER copies finished shards of another export of the same texts (docs/data.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --teachers
PY=.venv/bin/python
OUT=${OUT:-runs/results}
# The order docs/RESULTS.md's records were exported in (each text's own hash; embed_jax/data/corpora.py).
CORPUS=(--config.corpus.builtin=all+bible+fortunes --config.corpus.order=text)
export_worker() {
  $PY -m embed_jax.teachers.export --config=configs/teachers.py "${CORPUS[@]}" --config.corpus.max_texts=150000 \
    --config.output_dir="$OUT/records150k" --config.reuse_from="${REUSE:-}" --config.torch_threads=1 \
    --config.num_workers=2 --config.worker_index="$1"
}
export_worker 0 & first=$!
export_worker 1 & second=$!
wait "$first" && wait "$second"
# Validation texts: 512 from position 170,000 of the same order, past every training text (preflight checks it).
$PY -m embed_jax.teachers.export --config=configs/teachers.py "${CORPUS[@]}" --config.corpus.max_texts=512 \
  --config.corpus.skip_texts=170000 --config.output_dir="$OUT/eval_records"
for variant in "" small; do
  $PY -m embed_jax.main --config="configs/results.py${variant:+:$variant}" \
    --workdir="$OUT/train150k${variant:+_$variant}" --config.data.records_dir="$OUT/records150k" \
    --config.data.eval_records_dir="$OUT/eval_records"
done
MINILM=asset:all-MiniLM-L6-v2
MPNET=asset:all-mpnet-base-v2
$PY -m embed_jax.eval --out="$OUT/eval" --model=$MINILM --model=$MPNET --model=concat:$MINILM+$MPNET \
  --model=concat:$MINILM+$MPNET@0.15,0.85 --model="$OUT/train150k" --model="$OUT/train150k_small" \
  --model=asym:"$OUT/train150k" --quantize=int8,binary
# The stage rows: the student after stage 2 and after stage3_heads (what stage 3 changed).
for stage in stage2 stage3_heads stage3; do
  $PY -m embed_jax.eval --out="$OUT/eval_$stage" --model="$OUT/train150k/$stage"
done
# Why the student retrieves below its start: its fit to the target against the two references (read from the cache).
$PY scripts/retrieval_probe.py --student="$OUT/train150k" --out="$OUT/eval"
$PY -m embed_jax.convert.hf --workdir="$OUT/train150k" --out="$OUT/student" --eval_json="$OUT/eval/results.json" \
  --overwrite
$PY benchmarks/encode_exported.py --folder="$OUT/student" --texts 500 --rounds 3 --threads 2
