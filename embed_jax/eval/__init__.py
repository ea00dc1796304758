"""Evaluation on the hold-out that training never sees: `python -m embed_jax.eval` (docs/eval.md).

    tasks.py      what a task is, and the registry (lee.py, wordnet.py: the text suite; digits.py: zero-shot
                  digits for students with an image path, and its program zero_shot.py; beir.py, pairs.py: the
                  user's data; mteb_task.py: MTEB tasks, the mteb extra)
    metrics.py    correlations, nDCG, recall and MRR on unit vectors
    specs.py      --model specs → models: st_model.py (sentence-transformers), flax_model.py (a trained stage),
                  onnx_model.py (an ONNX graph, onnxruntime), derived.py (concat:, pca:, asym:)
    encoding.py   the model interface and the per-model vector cache
    overlap.py    refuse models whose training records contain the hold-out
    runner.py     the suite over models × heads; report.py: results.json and results.md
"""
