"""Input pipeline throughput: embed_jax's grain pipeline vs a PyTorch DataLoader, same records, one run.

    python -m embed_jax.teachers.export --config=configs/teachers.py          # the records (if not there yet)
    python benchmarks/pipeline_throughput.py --records workdir/teacher_records
    python benchmarks/pipeline_throughput.py --records DIR --batch 128 --max-length 256 --batches 300

Both sides read the same ArrayRecord shards and produce the same kind of global batch (token ids, attention mask,
teacher vectors) with the student's tokenizer (all-MiniLM-L6-v2's), shuffled:

- PyTorch DataLoader: what a PyTorch user writes — a map-style Dataset over the decoded records, `shuffle=True`,
  a collate_fn calling the Hugging Face tokenizer with `padding="max_length"` (fixed shapes, as a jit-compiled step
  wants), `num_workers` worker processes (started by spawn: ArrayRecord readers do not survive fork).
- embed_jax: `pipeline.make_dataset` — grain index shuffle, one ArrayRecord read and one Rust `encode_batch` per
  batch, padding to the smallest of the length buckets, `read_threads` threads of prefetch; once with random
  batches (as the paper), once grouped by length over a window of `--window` batches.

It reports global batches/s and real tokens/s after a warm-up, the share of padding in the produced tensors (what
the train step computes on for nothing: the student's step cost grows with the padded length), and peak resident
memory (each side in its own long-lived child process). The sides take turns, A B C A B C …, `--rounds` rounds of
`--batches` batches each from the same running iterator (benchmarks/harness.py): median with min–max, and the median
of the rounds' ratios. The load average is printed at the start and the end, with a warning when the machine is busy.
While one side is timed the others wait, their prefetch buffers full (a few batches: small against `--batches`).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

TOKENIZER = "asset:all-MiniLM-L6-v2"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(batches, count: int, warmup: int):
    """(setup, run_round): `warmup` batches taken now, then `count` timed batches per round from the same iterator."""
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    return {}, lambda: timed_batches(iterator, count)


def timed_batches(iterator, count: int) -> dict:
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


def run_embed_jax(args: argparse.Namespace):
    from embed_jax.data import pipeline

    source = pipeline.RecordDataSource(args.records)
    dataset = pipeline.make_dataset(source, tokenizer=TOKENIZER, global_batch_size=args.batch,
                                    max_length=args.max_length, length_buckets=args.buckets, seed=0,
                                    length_grouping_window=args.window, read_threads=args.workers)
    return measure(dataset, args.batches, args.warmup)


class RecordsDataset:
    """torch map-style dataset over the same shards, decoded the same way. Workers start by spawn and open their own
    readers: ArrayRecord's reader threads do not survive fork (a forked worker segfaults)."""

    def __init__(self, folder: str):
        from embed_jax.data import records

        self.folder, self.length, self.source = folder, records.read_manifest(folder).num_records, None

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        if self.source is None:
            from embed_jax.data import pipeline

            self.source = pipeline.RecordDataSource(self.folder)
        return self.source[index]


class Collate:
    """The Hugging Face tokenizer, padding to max_length (fixed shapes, as a jit-compiled step wants)."""

    def __init__(self, max_length: int):
        from transformers import AutoTokenizer

        from embed_jax.assets import resolve_model_path

        self.tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path(TOKENIZER)))
        self.max_length = max_length

    def __call__(self, batch):
        import numpy as np

        encoded = self.tokenizer([record["text"] for record in batch], truncation=True, max_length=self.max_length,
                                 padding="max_length", return_tensors="np")
        return {"input_ids": encoded["input_ids"].astype(np.int32),
                "attention_mask": encoded["attention_mask"].astype(np.int32),
                "teacher": np.stack([record["teacher"] for record in batch])}


def run_torch(args: argparse.Namespace):
    import torch

    loader = torch.utils.data.DataLoader(RecordsDataset(args.records), batch_size=args.batch, shuffle=True,
                                         drop_last=True, collate_fn=Collate(args.max_length),
                                         num_workers=args.workers, persistent_workers=args.workers > 0,
                                         multiprocessing_context="spawn" if args.workers else None,
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
    parser.add_argument("--batches", type=int, default=200, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="grain read threads / DataLoader worker processes")
    parser.add_argument("--window", type=int, default=8, help="length-grouping window of the grouped embed_jax row")
    parser.add_argument("--child", choices=("torch", "embed_jax", "embed_jax_grouped"))
    args = parser.parse_args()
    if args.child:
        protocol = harness.claim_stdout()
        if args.child == "embed_jax":
            args.window = 1
        setup, run_round = (run_torch if args.child == "torch" else run_embed_jax)(args)
        harness.serve_rounds(protocol, run_round, setup)
        return

    labels = {"torch": "PyTorch DataLoader + HF tokenizer, padded to max length",
             "embed_jax": "embed_jax grain pipeline, random batches",
             "embed_jax_grouped": f"embed_jax grain pipeline, length-grouped (window {args.window})"}
    environment = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    load_before = harness.print_load("start")
    sides = {}
    try:
        for side in labels:
            sides[side] = harness.ChildSide(side, [sys.executable, __file__, "--child", side] + sys.argv[1:],
                                            env=environment)
        results = harness.compare(sides, rounds=args.rounds)
    except (harness.SideFailed, ValueError) as error:
        raise SystemExit(f"pipeline_throughput.py: {error}") from None
    finally:
        for side in sides.values():
            side.close()
    harness.print_load("end", since=load_before)
    print(f"\n{args.records}: global batch {args.batch}, max length {args.max_length}, buckets "
          f"{tuple(args.buckets) + (args.max_length,)}, {args.workers} workers, {args.rounds} interleaved rounds of "
          f"{args.batches} batches after {args.warmup} warm-up: median (min–max)\n")
    print("| side | global batches/s | real tokens/s | padding share | ratio (per round) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for side, label in labels.items():
        rounds = results[side]
        rate = harness.median_of(rounds, "batches_per_s")
        ratio = harness.summarise([a["batches_per_s"] / b["batches_per_s"] for a, b in zip(rounds, results["torch"])])
        print(f"| {label} | {harness.format_spread(rate)} | {harness.median_of(rounds, 'real_tokens_per_s')['median']:,.0f} "
              f"| {100 * rounds[-1]['padding']:.0f}% | {harness.format_spread(ratio, '×', 2)} | "
              f"{max(row['peak_rss_mib'] for row in rounds):.0f} |")


if __name__ == "__main__":
    main()
