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
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

TEACHERS = ("asset:all-MiniLM-L6-v2", "asset:all-mpnet-base-v2")
# (label, dtype, autocast): the settings `teachers.<name>.dtype` / `.autocast` take.
VARIANTS = (("float32", "float32", False), ("bfloat16 autocast", "bfloat16", True),
            ("bfloat16 weights", "bfloat16", False))


def cosines(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    dots = (vectors.astype(np.float64) * reference).sum(axis=1)
    return dots / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))


def measure(path: str, texts: list[str], rounds: int, max_seq_length: int) -> list[dict]:
    from embed_jax.teachers import encoders

    teachers = [encoders.load_teacher(encoders.TeacherSpec("t", path, dtype=dtype, autocast=autocast,
                                                           max_seq_length=max_seq_length))
                for _, dtype, autocast in VARIANTS]
    vectors: dict[str, np.ndarray] = {}

    def encode_pass(label, teacher):
        started = time.perf_counter()
        vectors[label] = encoders.encode_texts(teacher, texts, max_tokens_per_batch=4096, max_batch_size=256)
        rate = len(texts) / (time.perf_counter() - started)
        print(f"  {label}: {rate:.1f} texts/s", file=sys.stderr)
        return {"texts_per_s": rate}

    sides = {label: (lambda label=label, teacher=teacher: encode_pass(label, teacher))
             for (label, _, _), teacher in zip(VARIANTS, teachers)}
    results = harness.compare(sides, rounds=rounds)
    reference = vectors[VARIANTS[0][0]].astype(np.float64)
    rows = []
    for label, _, _ in VARIANTS:
        similarity = cosines(vectors[label], reference)
        rows.append({"variant": label, "rate": harness.median_of(results[label], "texts_per_s"),
                     "min_cos": float(similarity.min()), "mean_cos": float(similarity.mean())})
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
    load_before = harness.print_load("start")
    results = {path: measure(path, texts, args.rounds, args.max_seq_length) for path in args.teachers.split(",")}
    harness.print_load("end", since=load_before)
    print(f"\n{len(texts)} built-in texts, {args.threads} torch thread(s), ≤ {args.max_seq_length} tokens, median of "
          f"{args.rounds} interleaved rounds (min–max), torch {torch.__version__}\n")
    print("| teacher | variant | texts/s | speed-up | min cosine to fp32 | mean cosine to fp32 |")
    print("|---|---|---:|---:|---:|---:|")
    for path, rows in results.items():
        for row in rows:
            print(f"| {path.removeprefix('asset:')} | {row['variant']} | {harness.format_spread(row['rate'])} "
                  f"| {row['rate']['median'] / rows[0]['rate']['median']:.2f}× | "
                  f"{row['min_cos']:.6f} | {row['mean_cos']:.6f} |")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
