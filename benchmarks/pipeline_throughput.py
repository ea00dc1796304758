"""Input pipeline throughput: embed_jax's grain pipeline vs a PyTorch DataLoader, same records, one run.

    python -m embed_jax.teachers.export --config=configs/teachers.py          # the records (if not there yet)
    python benchmarks/pipeline_throughput.py --records workdir/teacher_records
    python benchmarks/pipeline_throughput.py --records DIR --batch 128 --max-length 256 --batches 300

Both sides read the same ArrayRecord shards and produce the same kind of global batch (token ids, attention mask,
teacher vectors) with the student's tokenizer (all-MiniLM-L6-v2's), shuffled:

- PyTorch DataLoader: what a PyTorch user writes — a map-style Dataset over the decoded records, `shuffle=True`,
  a collate_fn calling the Hugging Face tokenizer with `padding="max_length"` (fixed shapes, as a jit-compiled step
  wants), `num_workers` worker processes.
- embed_jax: `pipeline.make_dataset` — grain index shuffle, batch, one Rust `encode_batch` per batch, padding to the
  smallest of the length buckets, `read_threads` threads of prefetch.

It reports global batches/s and real tokens/s after a warm-up, the share of padding in the produced tensors (what
the train step computes on for nothing), and peak resident memory (each side in its own child process).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

TOKENIZER = "asset:all-MiniLM-L6-v2"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(batches, count: int, warmup: int) -> dict:
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    real = padded = 0
    started = time.perf_counter()
    for _ in range(count):
        batch = next(iterator)
        mask = batch["attention_mask"]
        real += int(mask.sum())
        padded += int(mask.shape[0] * mask.shape[1])
    seconds = time.perf_counter() - started
    return {"batches_per_s": count / seconds, "real_tokens_per_s": real / seconds, "padding": 1 - real / padded,
            "peak_rss_mib": peak_rss_mib()}


def run_embed_jax(args: argparse.Namespace) -> dict:
    from embed_jax.data import pipeline

    source = pipeline.RecordDataSource(args.records)
    dataset = pipeline.make_dataset(source, tokenizer=TOKENIZER, global_batch_size=args.batch,
                                    max_length=args.max_length, length_buckets=args.buckets, seed=0,
                                    read_threads=args.workers)
    return measure(dataset, args.batches, args.warmup)


def run_torch(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from embed_jax.data import pipeline
    from embed_jax.teachers.assets import resolve_model_path

    source = pipeline.RecordDataSource(args.records)  # the same shards, decoded the same way
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path(TOKENIZER)))

    class Records(torch.utils.data.Dataset):
        def __len__(self):
            return len(source)

        def __getitem__(self, index):
            return source[index]

    def collate(records):
        encoded = tokenizer([record["text"] for record in records], truncation=True, max_length=args.max_length,
                            padding="max_length", return_tensors="np")
        return {"input_ids": encoded["input_ids"].astype(np.int32),
                "attention_mask": encoded["attention_mask"].astype(np.int32),
                "teacher": np.stack([record["teacher"] for record in records])}

    loader = torch.utils.data.DataLoader(Records(), batch_size=args.batch, shuffle=True, drop_last=True,
                                         collate_fn=collate, num_workers=args.workers,
                                         persistent_workers=args.workers > 0,
                                         generator=torch.Generator().manual_seed(0))

    def forever():
        while True:
            yield from loader

    return measure(forever(), args.batches, args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", default="workdir/teacher_records")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--buckets", type=int, nargs="*", default=[32, 64])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="grain read threads / DataLoader worker processes")
    parser.add_argument("--child", choices=("torch", "embed_jax"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps((run_torch if args.child == "torch" else run_embed_jax)(args)))
        return

    results = {}
    for side in ("torch", "embed_jax"):
        command = [sys.executable, __file__, "--child", side] + sys.argv[1:]
        environment = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
        result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
        if result.returncode:
            raise SystemExit(f"{side} failed:\n{result.stderr[-3000:]}")
        results[side] = json.loads(result.stdout.strip().splitlines()[-1])
    baseline = results["torch"]["batches_per_s"]
    print(f"\n{args.records}: global batch {args.batch}, max length {args.max_length}, buckets "
          f"{tuple(args.buckets) + (args.max_length,)}, {args.workers} workers, {args.batches} batches after "
          f"{args.warmup} warm-up\n")
    print("| side | global batches/s | real tokens/s | padding share | ratio | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for side, label in (("torch", "PyTorch DataLoader + HF tokenizer"), ("embed_jax", "embed_jax grain pipeline")):
        result = results[side]
        print(f"| {label} | {result['batches_per_s']:.1f} | {result['real_tokens_per_s']:,.0f} | "
              f"{100 * result['padding']:.0f}% | {result['batches_per_s'] / baseline:.2f}× | "
              f"{result['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
