"""Length-bucketed batches for teacher inference: fewer padded tokens, and big batches where texts are short.

Texts are sorted by token length (longest first, so that a batch too big for memory fails at once) and cut into
batches whose padded size, batch size × its longest text, stays within a token budget, up to a row cap. Plain
`SentenceTransformer.encode` sorts too, but by characters and with a fixed batch size (32): short texts then run
in small, overhead-bound batches. Measured on this 2-core CPU with all-MiniLM-L6-v2 over 1,500 built-in texts
(mean 16 tokens): ST encode 16 texts/s, budget 4,096 tokens × at most 256 rows 35 texts/s (2.1×), same vectors
(max abs diff 1.4e-7), under heavy machine load; benchmarks/export_throughput.py measures both teachers.
"""
from __future__ import annotations

import numpy as np

DEFAULT_MAX_TOKENS_PER_BATCH = 4096
DEFAULT_MAX_BATCH_SIZE = 256


def plan_length_batches(lengths: np.ndarray, max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
                        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> list[np.ndarray]:
    """Index arrays covering every position once, longest texts first, each batch within the budget.

    A text longer than the budget alone forms a batch of one. Ties keep corpus order, so the plan depends on the
    lengths only (a resumed export batches exactly as an uninterrupted one).
    """
    if max_tokens_per_batch <= 0 or max_batch_size <= 0:
        raise ValueError(f"max_tokens_per_batch={max_tokens_per_batch} and max_batch_size={max_batch_size} "
                         f"must be positive.")
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        rows = max(1, min(max_batch_size, max_tokens_per_batch // longest))
        batches.append(order[start:start + rows])
        start += rows
    return batches
