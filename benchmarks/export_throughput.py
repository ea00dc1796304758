"""Teacher export throughput: embed_jax's length-bucketed export vs plain `SentenceTransformer.encode`, one run.

    python benchmarks/export_throughput.py                         # 1,000 built-in texts, MiniLM + mpnet
    python benchmarks/export_throughput.py --texts 400 --corpus wiki --repeats 1

Both sides turn the same real texts (the first N of a built-in corpus, the export's own default mix: WordNet
definitions and examples, Wikipedia passages, ABC news) into the same target, SPEC §2's normalised concatenation of
all-MiniLM-L6-v2 and all-mpnet-base-v2 (1152-d), on the same CPU threads:

- sentence-transformers: what a user writes by hand, `model.encode(texts, normalize_embeddings=True)` per teacher
  (batch 32; it sorts by character length), then concatenate and renormalise.
- embed_jax: the export's encoding path (`export.encode_shard`), shard by shard (1,024 texts, the default): texts
  sorted by token length and cut into batches of at most 4,096 padded tokens and 256 rows, then
  `targets.concatenated_target` (which also checks every vector).

Model loading is outside the timed part on both sides; tokenisation is inside. Each side runs in its own child
process, so its peak resident memory is its own; sides alternate `--repeats` times and the best time counts (the
machine is shared). The table reports texts/s, the ratio, peak RSS, and the max abs difference between the two
sides' vectors (equal vectors are the condition of the comparison).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

TEACHERS = ("asset:all-MiniLM-L6-v2", "asset:all-mpnet-base-v2")


def corpus_texts(corpus: str, count: int) -> list[str]:
    from embed_jax.data import corpora

    return [item.text for item in corpora.builtin_texts(corpus, count)]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_sentence_transformers(texts: list[str]) -> tuple[np.ndarray, float]:
    from sentence_transformers import SentenceTransformer

    from embed_jax.assets import resolve_model_path

    models = [SentenceTransformer(str(resolve_model_path(path)), device="cpu") for path in TEACHERS]
    started = time.perf_counter()
    parts = [model.encode(texts, normalize_embeddings=True) for model in models]
    joined = np.concatenate(parts, axis=1)
    target = joined / np.linalg.norm(joined, axis=1, keepdims=True)
    return target.astype(np.float32), time.perf_counter() - started


def run_embed_jax(texts: list[str], shard_size: int) -> tuple[np.ndarray, float]:
    import ml_collections

    from embed_jax.data.records import Text
    from embed_jax.teachers import encoders, export

    config = ml_collections.ConfigDict({"output_dir": "unused", "storage_dtype": "float32", "shard_size": shard_size,
                                        "max_tokens_per_batch": 4096, "max_batch_size": 256, "teacher_order": "a,b",
                                        "teachers": {"a": {"path": TEACHERS[0], "pooling": "auto"},
                                                     "b": {"path": TEACHERS[1], "pooling": "auto"}}})
    settings = export.settings_from_config(config)
    teachers = [encoders.load_teacher(spec) for spec in settings.teacher_specs]
    items = [Text(str(index), text) for index, text in enumerate(texts)]
    started = time.perf_counter()
    shards = [export.encode_shard(items[start:start + shard_size], teachers, settings)
              for start in range(0, len(items), shard_size)]
    return np.concatenate(shards), time.perf_counter() - started


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    texts = corpus_texts(args.corpus, args.texts)
    if args.side == "sentence-transformers":
        vectors, seconds = run_sentence_transformers(texts)
    else:
        vectors, seconds = run_embed_jax(texts, args.shard_size)
    np.save(args.vectors, vectors)
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_mib()}))


def run_side(side: str, args: argparse.Namespace, vectors_path: str) -> dict:
    command = [sys.executable, __file__, "--child", side, "--vectors", vectors_path, "--texts", str(args.texts),
               "--corpus", args.corpus, "--threads", str(args.threads), "--shard-size", str(args.shard_size)]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if result.returncode:
        raise SystemExit(f"{side} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--corpus", default="all", help="built-in corpus: all, wordnet, wiki, lee_background")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--child", choices=("sentence-transformers", "embed_jax"))
    parser.add_argument("--vectors")
    args = parser.parse_args()
    if args.child:
        args.side = args.child
        child(args)
        return

    sides = ("sentence-transformers", "embed_jax")
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for side in sides:
                result = run_side(side, args, os.path.join(scratch, f"{side}.npy"))
                print(f"repeat {repeat + 1}: {side}: {args.texts / result['seconds']:.1f} texts/s", file=sys.stderr)
                if side not in best or result["seconds"] < best[side]["seconds"]:
                    best[side] = result
        vectors = {side: np.load(os.path.join(scratch, f"{side}.npy")) for side in sides}
    difference = float(np.abs(vectors["embed_jax"] - vectors["sentence-transformers"]).max())
    baseline = best["sentence-transformers"]["seconds"]
    mean_words = np.mean([len(text.split()) for text in corpus_texts(args.corpus, args.texts)])
    print(f"\n{args.texts} texts of built-in corpus '{args.corpus}' (mean {mean_words:.0f} words), teachers "
          f"all-MiniLM-L6-v2 + all-mpnet-base-v2 → 1152-d, {args.threads} CPU threads, best of {args.repeats}\n")
    print("| side | texts/s | seconds | ratio | peak RSS (MiB) | max abs diff vs ST |")
    print("|---|---:|---:|---:|---:|---:|")
    for side in sides:
        seconds = best[side]["seconds"]
        print(f"| {side} | {args.texts / seconds:.1f} | {seconds:.1f} | {baseline / seconds:.2f}× | "
              f"{best[side]['peak_rss_mib']:.0f} | {0.0 if side == sides[0] else difference:.1e} |")


if __name__ == "__main__":
    main()
