#!/usr/bin/env bash
# The embedded default, end to end on this machine: set up, export real teacher vectors (all-MiniLM-L6-v2 +
# all-mpnet-base-v2, 1152-d) for a built-in corpus, distil a student from them, score it against all-MiniLM-L6-v2 on
# the built-in hold-out suite, and export it as a sentence-transformers folder whose model card shows that score.
# 10 min 21 s end to end on this 2-core CPU with nothing else running (docs/training.md, "Measured"). Re-running
# resumes: finished exports and checkpoints are reused, every vector the evaluation encoded comes from its cache
# (runs/default/eval/cache), and the exported folder is rewritten from the same checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --teachers
RUN_DIR=${RUN_DIR:-runs/default}
.venv/bin/python -m embed_jax.teachers.export --config=configs/teachers.py --config.output_dir="$RUN_DIR/records" "$@"
# 256 validation texts from further down the same corpus order: the held-out loss curve of every stage.
.venv/bin/python -m embed_jax.teachers.export --config=configs/teachers.py:eval --config.output_dir="$RUN_DIR/eval_records"
.venv/bin/python -m embed_jax.main --config=configs/distill.py --config.data.records_dir="$RUN_DIR/records" \
  --config.data.eval_records_dir="$RUN_DIR/eval_records" --workdir="$RUN_DIR/train"
# The trained checkpoint itself (Flax), each head, against all-MiniLM-L6-v2 (the student's init model): ~3 min the
# first time, seconds after (the cache is keyed by each model's own files, so a retrained student leaves the
# teacher's vectors valid). The exported folder encodes the same vectors (docs/export.md).
.venv/bin/python -m embed_jax.eval --model="$RUN_DIR/train" --model=asset:all-MiniLM-L6-v2 --out="$RUN_DIR/eval" \
  --progress_every_s=30 > /dev/null
.venv/bin/python -m embed_jax.convert.hf --workdir="$RUN_DIR/train" --out="$RUN_DIR/model" --overwrite \
  --eval_json="$RUN_DIR/eval/results.json"
cat "$RUN_DIR/eval/results.md"
cat <<DONE

[run] the student:    $RUN_DIR/model   (SentenceTransformer('$RUN_DIR/model'); model card: $RUN_DIR/model/README.md)
[run] the evaluation: $RUN_DIR/eval/results.md, results.json, results.png
[run] loss curves:    $RUN_DIR/train/stage{1,2,3_heads,3_pairs}/loss_curves.png (metrics.jsonl and TensorBoard events beside them)
[run] next:
  .venv/bin/python -m embed_jax.eval --model=$RUN_DIR/train --model='asym:$RUN_DIR/train' --quantize=int8,binary --out=$RUN_DIR/eval_asym
      # + documents by the concatenated teachers, int8/binary vectors (mpnet encodes the suite once: ~35 min at load 8–20)
  .venv/bin/python -m embed_jax.eval --model=$RUN_DIR/model --tasks=beir:YOUR_FOLDER --out=$RUN_DIR/eval_mine
      # your own retrieval data (BEIR layout) or scored pairs (pairs:FILE), docs/eval.md
  .venv/bin/python -m embed_jax.convert.onnx --model=$RUN_DIR/model --out=$RUN_DIR/onnx    # one ONNX graph, docs/export.md
  .venv/bin/python -m embed_jax.main --config=configs/distill.py --config.data.records_dir=... --workdir=...
      # your own records (docs/data.md, docs/training.md)
DONE
