"""Teacher export throughput: the export run as W workers vs sentence-transformers' own way with W processes.

    python benchmarks/export_throughput.py                          # 2 workers, 1,024 built-in texts, 3 rounds
    python benchmarks/export_throughput.py --workers 1 --threads 2  # one process each: the export vs plain encode
    python benchmarks/export_throughput.py --dtype bfloat16 --autocast

Both sides turn the same texts (the first N built-in texts, the export's default mix) into the same target, the
normalised concatenation of all-MiniLM-L6-v2 and all-mpnet-base-v2 (1152-d) of docs/method.md §2, each teacher reading
at most 128 tokens (configs/teachers.py), in the same dtype, each process on
`--threads` torch threads (OMP_NUM_THREADS too):

- sentence-transformers: what its documentation offers for several processes, `model.encode(texts,
  device=["cpu"] * W, normalize_embeddings=True)` per teacher (a spawned pool; batches of 32, sorted by characters),
  then concatenate and renormalise. With W = 1, plain `model.encode(texts)`.
- embed_jax: `python -m embed_jax.teachers.export` started W times with --config.worker_index/num_workers on one
  fresh folder (shards of `--shard-size` texts, float32 storage), until the manifest is written.

Each side is timed from starting its processes to having every vector (imports and model loading included on both
sides: that is what a user waits for). Sides alternate, A B A B …, `--rounds` times; the table gives the median
texts/s with its min–max spread, the ratio to sentence-transformers, and the max abs difference between the two
sides' vectors (equal vectors are the condition of the comparison). The load average is printed at the start and
at the end, with a warning above 0.5 per core. Figures: docs/data.md, "Measured".
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import harness  # noqa: E402

TEACHERS = {"minilm": "asset:all-MiniLM-L6-v2", "mpnet": "asset:all-mpnet-base-v2"}
MAX_SEQ_LENGTH = 128


def corpus_texts(count: int) -> list[str]:
    from embed_jax.data import corpora

    return [item.text for item in corpora.builtin_texts("all", count)]


def child_sentence_transformers(args: argparse.Namespace) -> None:
    """The sentence-transformers side, in its own process: load, encode with W processes, combine, save."""
    import torch
    from sentence_transformers import SentenceTransformer

    from embed_jax.assets import resolve_model_path

    torch.set_num_threads(args.threads)
    texts = corpus_texts(args.texts)
    parts = []
    for path in TEACHERS.values():
        model = SentenceTransformer(str(resolve_model_path(path)), device="cpu")
        model.max_seq_length = MAX_SEQ_LENGTH
        if args.dtype != "float32" and not args.autocast:
            model.to(getattr(torch, args.dtype))
        devices = ["cpu"] * args.workers if args.workers > 1 else None
        with torch.autocast("cpu", dtype=getattr(torch, args.dtype), enabled=args.autocast):
            parts.append(model.encode(texts, device=devices, normalize_embeddings=True, convert_to_numpy=True)
                         .astype(np.float32))
    joined = np.concatenate(parts, axis=1)
    np.save(args.vectors, joined / np.linalg.norm(joined, axis=1, keepdims=True))


def run_sentence_transformers(args: argparse.Namespace, vectors: Path) -> float:
    command = [sys.executable, __file__, "--child", "--vectors", str(vectors), *forwarded(args)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment(args))
    if result.returncode:
        raise SystemExit(f"sentence-transformers side failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def export_command(args: argparse.Namespace, folder: Path, index: int) -> list[str]:
    settings = {"output_dir": folder, "corpus.kind": "builtin", "corpus.builtin": "all", "corpus.max_texts": args.texts,
                "teacher_order": ",".join(TEACHERS), "storage_dtype": "float32", "shard_size": args.shard_size,
                "torch_threads": args.threads, "progress_every_s": 1e9, "worker_index": index,
                "num_workers": args.workers}
    for name, path in TEACHERS.items():
        settings |= {f"teachers.{name}.path": path, f"teachers.{name}.max_seq_length": MAX_SEQ_LENGTH,
                     f"teachers.{name}.dtype": args.dtype, f"teachers.{name}.autocast": args.autocast}
    return [sys.executable, "-m", "embed_jax.teachers.export", "--config=configs/teachers.py"] + [
        f"--config.{key}={value}" for key, value in settings.items()]


def run_export(args: argparse.Namespace, folder: Path) -> float:
    started = time.perf_counter()
    processes = [subprocess.Popen(export_command(args, folder, index), cwd=REPO, env=environment(args),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for index in range(args.workers)]
    errors = [process.communicate()[1] for process in processes]
    seconds = time.perf_counter() - started
    for process, error in zip(processes, errors):
        if process.returncode:
            raise SystemExit(f"export worker failed:\n{error[-3000:]}")
    return seconds


def exported_vectors(folder: Path) -> np.ndarray:
    from array_record.python import array_record_module

    from embed_jax.data import records

    manifest = records.read_manifest(folder)
    vectors = []
    for path in records.shard_paths(folder, manifest):
        reader = array_record_module.ArrayRecordReader(str(path))
        vectors.extend(records.decode_record(data)["teacher"] for data in reader.read_all())
        reader.close()
    return np.stack(vectors)


def environment(args: argparse.Namespace) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(args.threads), "TRANSFORMERS_VERBOSITY": "error"}


def forwarded(args: argparse.Namespace) -> list[str]:
    return ["--texts", str(args.texts), "--workers", str(args.workers), "--threads", str(args.threads),
            "--dtype", args.dtype] + (["--autocast"] if args.autocast else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--autocast", action="store_true", help="float32 weights, forward under torch.autocast")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--vectors")
    args = parser.parse_args()
    if args.child:
        child_sentence_transformers(args)
        return

    load_before = harness.print_load("start")
    with tempfile.TemporaryDirectory() as scratch:
        st_vectors, folder = Path(scratch) / "st.npy", Path(scratch) / "records"

        def fresh_export():
            shutil.rmtree(folder, ignore_errors=True)
            return run_export(args, folder)

        sides = {"sentence-transformers": lambda: run_sentence_transformers(args, st_vectors),
                 "embed_jax export": fresh_export}
        seconds = {side: [row["seconds"] for row in rows]
                   for side, rows in harness.compare({side: (lambda run=run: {"seconds": run()})
                                                      for side, run in sides.items()}, rounds=args.rounds).items()}
        difference = float(np.abs(exported_vectors(folder) - np.load(st_vectors)).max())
    harness.print_load("end", since=load_before)
    rates = {side: harness.summarise([args.texts / value for value in values]) for side, values in seconds.items()}
    baseline = rates["sentence-transformers"]["median"]
    precision = args.dtype + (" autocast" if args.autocast else "")
    print(f"\n{args.texts} built-in texts, MiniLM + mpnet → 1152-d, ≤ {MAX_SEQ_LENGTH} tokens, {precision}, "
          f"{args.workers} process(es) × {args.threads} thread(s), median of {args.rounds} interleaved rounds "
          f"(min–max), start to finish\n")
    print("| side | texts/s | ratio | max abs diff vs ST |")
    print("|---|---:|---:|---:|")
    for side, rate in rates.items():
        diff = "—" if side == "sentence-transformers" else f"{difference:.1e}"
        print(f"| {side} | {harness.format_spread(rate)} | {rate['median'] / baseline:.2f}× | {diff} |")
    print(json.dumps({"seconds": seconds, "max_abs_diff": difference}), file=sys.stderr)


if __name__ == "__main__":
    main()
