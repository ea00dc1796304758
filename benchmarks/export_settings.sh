#!/usr/bin/env bash
# The teacher export as the 100k records were made (teachers at their own windows, 256 / 384 tokens; one process,
# torch's default threads) against as scripts/results.sh makes them (teachers at 128 tokens; two workers of one torch
# thread): the same texts, fresh output folders, interleaved A B A B, each timed start to finish (models loaded).
#
#     bash benchmarks/export_settings.sh            # N=1536 texts of all+bible+fortunes, scratch in a new temp folder
#     N=4096 OUT=runs/export_ab bash benchmarks/export_settings.sh
#
# Results and reading: docs/data.md ("The export as it was and as it is"). OUT must be new or empty: nothing in it is
# overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
N=${N:-1536}
OUT=${OUT:-$(mktemp -d)}
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
  echo "export_settings: OUT=$OUT is not empty; give a new or empty folder (nothing in it is overwritten)." >&2
  exit 2
fi
mkdir -p "$OUT"
COMMON=(--config=configs/teachers.py --config.corpus.builtin=all+bible+fortunes --config.corpus.max_texts="$N")
now() { date +%s%N; }
seconds() { echo "$(( ($2 - $1) / 1000000 ))" | sed -E 's/(...)$/.\1/'; }
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (start)"
for round in 1 2; do
  start=$(now)
  $PY -m embed_jax.teachers.export "${COMMON[@]}" --config.teachers.minilm.max_seq_length=0 \
    --config.teachers.mpnet.max_seq_length=0 --config.output_dir="$OUT/A$round" > "$OUT/A$round.log" 2>&1
  echo "A (own windows, one process)  round $round: $(seconds "$start" "$(now)") s for $N texts"
  start=$(now)
  for worker in 0 1; do
    $PY -m embed_jax.teachers.export "${COMMON[@]}" --config.torch_threads=1 --config.num_workers=2 \
      --config.worker_index=$worker --config.output_dir="$OUT/B$round" > "$OUT/B$round.w$worker.log" 2>&1 &
  done
  for job in $(jobs -p); do wait "$job"; done
  echo "B (128 tokens, 2 workers × 1) round $round: $(seconds "$start" "$(now)") s for $N texts"
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (end); logs and records: $OUT"
