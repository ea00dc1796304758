"""Teacher precision on CPU: float32 vs bfloat16 autocast vs bfloat16 weights, rate and cosine to float32.

    python benchmarks/teacher_precision.py                       # both real teachers, 384 texts, 1 thread, 3 rounds
    python benchmarks/teacher_precision.py --teachers asset:all-MiniLM-L6-v2 --rounds 5 --threads 2

For each teacher, the three variants are loaded once (outside the timing) and then run in turns, A B C A B C …, over
the same texts through the export's own encoding path (`encoders.encode_texts`: length-bucketed batches of at most
4,096 padded tokens and 256 rows, each teacher reading at most 128 tokens as configs/teachers.py sets), so a busy
machine slows every variant alike. The table gives the median texts/s over the rounds with its min–max spread, the
speed-up over float32, and the minimum and mean cosine of each text's vector to its float32 vector. The machine's
load average is printed at the start and the end. Figures and the choice they led to: docs/data.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

TEACHERS = ("asset:all-MiniLM-L6-v2", "asset:all-mpnet-base-v2")
# (label, dtype, autocast): the settings `teachers.<name>.dtype` / `.autocast` take.
VARIANTS = (("float32", "float32", False), ("bfloat16 autocast", "bfloat16", True),
            ("bfloat16 weights", "bfloat16", False))


def load_line() -> str:
    one, five, _ = os.getloadavg()
    cores = os.cpu_count() or 1
    warning = f"  WARNING: above 0.5 per core ({cores} cores); figures are noisy" if one > 0.5 * cores else ""
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min){warning}"


def cosines(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    dots = (vectors.astype(np.float64) * reference).sum(axis=1)
    return dots / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))


def measure(path: str, texts: list[str], rounds: int, max_seq_length: int) -> list[dict]:
    from embed_jax.teachers import encoders

    teachers = [encoders.load_teacher(encoders.TeacherSpec("t", path, dtype=dtype, autocast=autocast,
                                                           max_seq_length=max_seq_length))
                for _, dtype, autocast in VARIANTS]
    rates: list[list[float]] = [[] for _ in VARIANTS]
    vectors: list[np.ndarray] = [np.empty(0)] * len(VARIANTS)
    for round_index in range(rounds):
        for index, teacher in enumerate(teachers):
            started = time.perf_counter()
            vectors[index] = encoders.encode_texts(teacher, texts, max_tokens_per_batch=4096, max_batch_size=256)
            rates[index].append(len(texts) / (time.perf_counter() - started))
            print(f"  round {round_index + 1} {VARIANTS[index][0]}: {rates[index][-1]:.1f} texts/s", file=sys.stderr)
    reference = vectors[0].astype(np.float64)
    rows = []
    for index, (label, _, _) in enumerate(VARIANTS):
        similarity = cosines(vectors[index], reference)
        rows.append({"variant": label, "median": statistics.median(rates[index]), "low": min(rates[index]),
                     "high": max(rates[index]), "min_cos": float(similarity.min()),
                     "mean_cos": float(similarity.mean())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teachers", default=",".join(TEACHERS), help="comma-separated teacher paths")
    parser.add_argument("--texts", type=int, default=384, help="the first N built-in texts (corpus 'all')")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-seq-length", type=int, default=128)
    args = parser.parse_args()

    import torch

    from embed_jax.data import corpora

    torch.set_num_threads(args.threads)
    texts = [item.text for item in corpora.builtin_texts("all", args.texts)]
    print(load_line(), file=sys.stderr)
    results = {path: measure(path, texts, args.rounds, args.max_seq_length) for path in args.teachers.split(",")}
    print(load_line(), file=sys.stderr)
    print(f"\n{len(texts)} built-in texts, {args.threads} torch thread(s), ≤ {args.max_seq_length} tokens, median of "
          f"{args.rounds} interleaved rounds (min–max), torch {torch.__version__}\n")
    print("| teacher | variant | texts/s | speed-up | min cosine to fp32 | mean cosine to fp32 |")
    print("|---|---|---:|---:|---:|---:|")
    for path, rows in results.items():
        for row in rows:
            print(f"| {path.removeprefix('asset:')} | {row['variant']} | {row['median']:.1f} "
                  f"({row['low']:.1f}–{row['high']:.1f}) | {row['median'] / rows[0]['median']:.2f}× | "
                  f"{row['min_cos']:.6f} | {row['mean_cos']:.6f} |")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
