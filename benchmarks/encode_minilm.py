"""Encoding throughput: embed_jax's Flax MiniLM (jit, length buckets) vs sentence-transformers, same texts, one run.

    python benchmarks/encode_minilm.py                      # 4,000 WordNet noun definitions, batch 64, max length 256
    python benchmarks/encode_minilm.py --texts 1000 --rounds 1
    python benchmarks/encode_minilm.py --model asset:all-mpnet-base-v2 --texts 200 --rounds 1   # any folder

Both sides encode the same real texts (WordNet 3.0 noun glosses, /usr/share/wordnet/data.noun) with all-MiniLM-L6-v2
(or --model: any sentence-transformers folder or asset: name), the same batch size and maximum length (sentence-transformers' max_seq_length, 256), mean
pooling and L2 normalisation, on the same number of CPU threads. Each side runs in its own long-lived child process,
so that its peak resident memory (RSS) is its own; the parent prints one Markdown table.

- sentence-transformers: `SentenceTransformer.encode` (it sorts texts by length and pads each batch to its longest).
- embed_jax: texts sorted by length, each batch padded to the next of at most 8 lengths chosen from the corpus to
  waste the fewest tokens (so a mixed-length corpus compiles a handful of shapes, not one per batch), the last batch
  filled with all-padding rows (same batch shape); one `jax.jit` of encoder + masked mean + normalisation over the
  split NNX state, compiled ahead of time per shape.

Each side makes a first pass over the corpus when it starts (for embed_jax after compiling every bucket: that time is
reported apart); then the sides take turns, A B A B …, one timed pass each per round, `--rounds` rounds
(benchmarks/harness.py): the table gives the median sentences/s with its min–max and the median of the rounds'
ratios, and the same by the CPU time each child used (with --threads 1 that is the work itself, which a busy
machine barely changes). The load average is printed at the start and the end, with a warning when the machine is
busy. Tokenisation is inside the timed loop on both sides.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

WORDNET_NOUNS = "/usr/share/wordnet/data.noun"
# At most this many padded lengths (compiled shapes) per corpus.
MAX_SHAPES = 8


def wordnet_glosses(count: int) -> list[str]:
    """The first `count` noun definitions of WordNet 3.0, in file order (lengths mixed: 2 to 100+ tokens)."""
    glosses = []
    with open(WORDNET_NOUNS, encoding="latin-1") as handle:
        for line in handle:
            if not line.startswith("  ") and "|" in line:
                glosses.append(line.split("|", 1)[1].strip())
                if len(glosses) == count:
                    break
    return glosses


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def sentence_transformers_side(args: argparse.Namespace):
    """(setup, run_round): model loaded and a first pass made; one timed pass per round."""
    import torch
    from sentence_transformers import SentenceTransformer

    from embed_jax.assets import resolve_model_path

    torch.set_num_threads(args.threads)
    texts = wordnet_glosses(args.texts)
    model = SentenceTransformer(str(resolve_model_path(args.model)), device="cpu")
    model.max_seq_length = args.max_length
    encode = lambda: model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)  # noqa: E731
    start = time.perf_counter()
    vectors = encode()
    first_pass = time.perf_counter() - start
    lengths = [len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]]
    padded = _padded_tokens_per_batch(sorted(lengths, reverse=True), args.batch_size, None)
    setup = {
        "first_pass_seconds": first_pass, "compile_seconds": 0.0, "compiled_shapes": 0,
        "real_tokens": sum(lengths), "padded_tokens": padded,
        "vectors": vectors[: args.check].tolist(), "threads": torch.get_num_threads(),
    }
    return setup, lambda: timed_round(encode)


def length_buckets(batch_longest: list[int], max_shapes: int = MAX_SHAPES) -> list[int]:
    """The ≤ max_shapes padded lengths that waste the fewest tokens when each batch is padded to the smallest one
    that holds its longest text (dynamic programming over the sorted distinct lengths; every batch has the same
    number of rows). Measured on 4,000 WordNet definitions, batch 64: +15% padding with 8 shapes, against +22% for
    fixed edges at multiples of 8 (7 shapes used) and +45% for multiples of 16 (4 shapes); sentence-transformers
    pads +4%, with a new shape nearly every batch, which eager PyTorch does not mind and XLA would recompile for."""
    values = sorted(set(batch_longest))
    batches_up_to = np.cumsum([0] + [batch_longest.count(value) for value in values])
    # cost[k][j]: fewest padded tokens (per row) covering values[:j] with k lengths; start[k][j]: its last group's start
    cost = np.full((max_shapes + 1, len(values) + 1), np.inf)
    start = np.zeros((max_shapes + 1, len(values) + 1), dtype=int)
    cost[0][0] = 0
    for shapes in range(1, max_shapes + 1):
        for end in range(1, len(values) + 1):
            for begin in range(end):
                candidate = cost[shapes - 1][begin] + (batches_up_to[end] - batches_up_to[begin]) * values[end - 1]
                if candidate < cost[shapes][end]:
                    cost[shapes][end], start[shapes][end] = candidate, begin
    shapes = int(np.argmin(cost[:, len(values)]))
    edges, end = [], len(values)
    while end > 0:
        edges.append(values[end - 1])
        end, shapes = start[shapes][end], shapes - 1
    return sorted(edges)


def padded_length(longest: int, buckets: list[int]) -> int:
    return next(edge for edge in buckets if edge >= longest)


def _padded_tokens_per_batch(lengths: list[int], batch_size: int, buckets: list[int] | None) -> int:
    """Tokens computed: rows × padded length per batch (buckets=None: each batch padded to its longest)."""
    total = 0
    for start in range(0, len(lengths), batch_size):
        longest = max(lengths[start:start + batch_size])
        rows = batch_size if buckets else len(lengths[start:start + batch_size])
        total += rows * (padded_length(longest, buckets) if buckets else longest)
    return total


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def timed_round(work) -> dict:
    """One timed pass: wall seconds, and the CPU seconds of this process (with --threads 1 the work itself, which a
    busy machine barely changes), and the peak RSS so far."""
    start_cpu = time.process_time()
    seconds = _timed(work)
    return {"seconds": seconds, "cpu_seconds": time.process_time() - start_cpu, "peak_rss_mib": peak_rss_mib()}


def embed_jax_side(args: argparse.Namespace):
    """(setup, run_round): every bucket compiled and a first pass made; one timed pass per round."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from embed_jax.data.pipeline import load_tokenizer
    from embed_jax.models import pooling
    from embed_jax.models.hf_import import load_text_encoder
    from embed_jax.assets import resolve_model_path

    assert "torch" not in sys.modules, "the embed_jax side must not load torch"
    path = str(resolve_model_path(args.model))
    texts = wordnet_glosses(args.texts)
    # No padding (we pad per batch to a bucket), truncation at max_length; MPNet pads with 1, BERT with 0.
    tokenizer, pad_id = load_tokenizer(path, args.max_length)

    module, _ = load_text_encoder(path)
    graphdef, state = nnx.split(module)

    @jax.jit
    def encode_batch(state, input_ids, attention_mask):
        hidden = nnx.merge(graphdef, state)(input_ids, attention_mask)
        pooled = pooling.masked_mean(hidden, attention_mask)
        return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)

    def batches():
        """(positions in `texts`, ids, mask) per batch, texts sorted longest first, padded to a bucket."""
        encodings = tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        for start in range(0, len(order), args.batch_size):
            rows = order[start:start + args.batch_size]
            length = padded_length(len(encodings[rows[0]].ids), buckets)
            ids = np.full((args.batch_size, length), pad_id, np.int32)
            mask = np.zeros((args.batch_size, length), np.int32)
            for row, index in enumerate(rows):
                ids[row, : len(encodings[index].ids)] = encodings[index].ids
                mask[row, : len(encodings[index].ids)] = 1
            yield rows, ids, mask

    def encode_all():
        vectors = np.zeros((len(texts), module.hidden_size), np.float32)
        # Dispatch is asynchronous: the next batch is tokenised and padded while the previous one computes.
        pending = [(rows, executables[ids.shape](state, ids, mask)) for rows, ids, mask in batches()]
        for rows, batch_vectors in pending:
            vectors[rows] = np.asarray(batch_vectors)[: len(rows)]
        return vectors

    # Bucket choice and ahead-of-time compilation of every shape the corpus needs, timed together.
    start = time.perf_counter()
    lengths = sorted((len(encoding.ids) for encoding in tokenizer.encode_batch(texts)), reverse=True)
    buckets = length_buckets([max(lengths[i:i + args.batch_size]) for i in range(0, len(lengths), args.batch_size)])
    executables = {}
    for _, ids, _ in batches():
        if ids.shape not in executables:
            spec = jax.ShapeDtypeStruct(ids.shape, jnp.int32)
            executables[ids.shape] = encode_batch.lower(state, spec, spec).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    vectors = encode_all()
    first_pass = time.perf_counter() - start + compile_seconds
    setup = {
        "first_pass_seconds": first_pass, "compile_seconds": compile_seconds,
        "compiled_shapes": len(executables), "real_tokens": sum(lengths),
        "padded_tokens": _padded_tokens_per_batch(lengths, args.batch_size, buckets), "buckets": buckets,
        "vectors": vectors[: args.check].tolist(),
        "threads": len(os.sched_getaffinity(0)), "device": str(jax.devices()[0]),
    }
    return setup, lambda: timed_round(encode_all)


SIDES = {"sentence-transformers": sentence_transformers_side, "embed_jax": embed_jax_side}


def child_side(side: str, args: argparse.Namespace) -> harness.ChildSide:
    command = [sys.executable, __file__, "--side", side] + [
        f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items() if key != "side"
    ]
    return harness.ChildSide(side, command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="asset:all-MiniLM-L6-v2", help="sentence-transformers folder or asset: name")
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed passes per side")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="cores each side is pinned to (torch "
                        "threads = this; XLA uses one thread per schedulable core)")
    parser.add_argument("--check", type=int, default=256, help="vectors compared between the two sides")
    parser.add_argument("--side", choices=sorted(SIDES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        protocol = harness.claim_stdout()
        # Both children run on the same `threads` cores: torch gets that many threads, and XLA's CPU client sizes
        # its pool from the schedulable cores, so pinning makes the two sides' parallelism equal.
        os.sched_setaffinity(0, set(range(args.threads)))
        setup, run_round = SIDES[args.side](args)
        harness.serve_rounds(protocol, run_round, setup)
        return

    load_before = harness.print_load("start")
    try:
        with child_side("sentence-transformers", args) as reference, child_side("embed_jax", args) as ours:
            results = harness.compare({"reference": reference, "ours": ours}, rounds=args.rounds)
            setups = {"reference": reference.setup, "ours": ours.setup}
    except (harness.SideFailed, ValueError) as error:
        raise SystemExit(f"encode_minilm.py: {error}") from None
    harness.print_load("end", since=load_before)
    cosine = np.sum(np.asarray(setups["reference"]["vectors"]) * np.asarray(setups["ours"]["vectors"]), axis=1)
    pairs = list(zip(results["reference"], results["ours"]))
    ratios = harness.summarise([a["seconds"] / b["seconds"] for a, b in pairs])
    cpu_ratios = harness.summarise([a["cpu_seconds"] / b["cpu_seconds"] for a, b in pairs])
    print(f"{args.model}, {args.texts} WordNet noun definitions, batch {args.batch_size}, max length "
          f"{args.max_length}, {args.threads} CPU threads each ({setups['ours']['device']}); {args.rounds} "
          f"interleaved rounds: median (min–max)\n")
    print("| | sentences/s | ratio (per round) | sentences per CPU second | ratio, CPU time | first pass incl. compile "
          "(s) | compile (s) | compiled shapes | padding overhead | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, key in (("sentence-transformers (PyTorch)", "reference"), ("embed_jax (Flax NNX, jit)", "ours")):
        side = setups[key]
        rate = harness.summarise([args.texts / row["seconds"] for row in results[key]])
        cpu_rate = harness.summarise([args.texts / row["cpu_seconds"] for row in results[key]])
        ratio = harness.format_spread(ratios, "×", digits=2) if key == "ours" else "1.00×"
        cpu_ratio = harness.format_spread(cpu_ratios, "×", digits=2) if key == "ours" else "1.00×"
        overhead = side["padded_tokens"] / side["real_tokens"] - 1
        print(f"| {name} | {harness.format_spread(rate, digits=0)} | {ratio} | "
              f"{harness.format_spread(cpu_rate, digits=0)} | {cpu_ratio} | {side['first_pass_seconds']:.1f} | "
              f"{side['compile_seconds']:.1f} | {side['compiled_shapes']} | {overhead:+.0%} | "
              f"{max(row['peak_rss_mib'] for row in results[key]):,.0f} |")
    print(f"\nembed_jax padded lengths: {setups['ours']['buckets']}; agreement on the first {len(cosine)} texts: "
          f"min cosine {cosine.min():.7f}")


if __name__ == "__main__":
    main()
