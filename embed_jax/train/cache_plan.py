"""What a cached stage (stage1.cached_pooled) costs, said before its pooling pass runs.

    caching_verdict(texts, steps, batch)      whether caching pays at this step count: the pass runs the frozen
                                              encoder once per text; the uncached stage would run it on steps × batch
                                              rows
    pooling_eta(texts, done, seconds)         the pass's duration: texts × the rate its first timed batches measured

At the paper's scale the pass is a forward over every training text (8M); measured here it is the stage's main cost
(docs/RESULTS.md: 150,000 texts pooled in 22 min, then 8,000 cached steps in 1 min 51 s).
"""
from __future__ import annotations

# The pooling pass is timed over its batches 1…TIMED_BATCHES (batch 0 compiles the forward, so it is left out).
TIMED_BATCHES = 4


def caching_verdict(num_texts: int, steps: int, batch_size: int, stage_name: str) -> str:
    """One line: encoder rows with caching (one per text) against without (one per row of each remaining step)."""
    uncached_rows = steps * batch_size
    if uncached_rows >= num_texts:
        return (f"[cached] {stage_name}: caching pays: the pooling pass encodes {num_texts:,} texts once; the "
                f"uncached stage would encode {steps:,} steps × {batch_size} = {uncached_rows:,} rows "
                f"({uncached_rows / max(num_texts, 1):.1f}× the pass)")
    return (f"[cached] {stage_name}: caching does not pay at this step count: the pooling pass encodes "
            f"{num_texts:,} texts, the uncached stage only {steps:,} steps × {batch_size} = {uncached_rows:,} rows "
            f"({uncached_rows / max(num_texts, 1):.2f}× the pass); set --config.{stage_name}.kind=records, "
            f"or train more steps")


def pooling_eta(num_texts: int, texts_done: int, seconds: float) -> str:
    """One line: the whole pass's duration at the rate measured over `texts_done` texts in `seconds`."""
    rate = texts_done / max(seconds, 1e-9)
    duration = num_texts / max(rate, 1e-9)
    shown = f"{duration / 3600:.1f} h" if duration >= 3600 else f"{duration / 60:.1f} min"
    return (f"[cached] pooling {num_texts:,} texts at the measured {rate:,.0f} texts/s (batches 1–{TIMED_BATCHES}): "
            f"~{shown} for the pass")
