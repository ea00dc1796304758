"""Encoding speed of the ONNX graph (fp32 and int8) against the sentence-transformers folder it came from, on this
CPU, same texts, in one process, runs interleaved (A B C A B C ...) so that a change in the machine's load hits every
side alike.

    python benchmarks/encode_onnx.py --folder=runs/default/export [--onnx=runs/default/onnx] [--texts 256]
        [--rounds 5] [--batch 32] [--threads 2]

Without --onnx the graph is written first into a temporary folder (python -m embed_jax.convert.onnx, with
--quantize=int8). Texts: the first --texts WordNet definitions of the built-in training corpus. Each side tokenises
inside its timed pass (the same tokenizer, right-padded, the folder's max_seq_length). Reported per side: median
sentences/s over the rounds, the spread (min–max), the ratio of medians against the folder, and the cosine of its
vectors to the folder's (min over texts). The load average is printed at the start and the end, with a warning when
it is above 0.5 per core (the figures are then approximate).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from embed_jax.convert import onnx_graph  # noqa: E402


def definitions(count: int) -> list[str]:
    from embed_jax.data.corpora import builtin_texts

    return [text.text for text in builtin_texts("wordnet") if text.id.endswith(":definition")][:count]


def batches(texts: list[str], size: int) -> list[list[str]]:
    return [texts[start:start + size] for start in range(0, len(texts), size)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True, help="an exported sentence-transformers folder")
    parser.add_argument("--onnx", default=None, help="its ONNX folder (default: written now, with int8)")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    load_before = harness.print_load("start")
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    onnx_folder = Path(args.onnx) if args.onnx else Path(tempfile.mkdtemp()) / "onnx"
    if not args.onnx:
        onnx_graph.export_onnx(args.folder, onnx_folder, quantize="int8")
    texts = definitions(args.texts)
    model = SentenceTransformer(args.folder, device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(onnx_folder))
    length = onnx_graph.max_seq_length(Path(args.folder))
    sides = {"sentence-transformers folder": lambda batch: model.encode(batch, batch_size=len(batch))}
    for label, file in (("ONNX fp32", onnx_graph.MODEL_FILE), ("ONNX int8", onnx_graph.INT8_FILE)):
        if (onnx_folder / file).is_file():
            onnx_session = onnx_graph.session(onnx_folder / file, threads=args.threads)
            sides[label] = (lambda batch, s=onnx_session:
                            onnx_graph.run_session(s, tokenizer, batch, length)[onnx_graph.OUTPUT_NAME])
    vectors = {label: np.concatenate([encode(batch) for batch in batches(texts, args.batch)])  # also the warm-up
               for label, encode in sides.items()}

    def encode_pass(encode):
        started = time.perf_counter()
        for batch in batches(texts, args.batch):
            encode(batch)
        return {"sentences_per_s": len(texts) / (time.perf_counter() - started)}

    results = harness.compare({label: (lambda encode=encode: encode_pass(encode)) for label, encode in sides.items()},
                              rounds=args.rounds)
    harness.print_load("end", since=load_before)
    rates = {label: harness.median_of(rows, "sentences_per_s") for label, rows in results.items()}
    reference = rates["sentence-transformers folder"]["median"]
    print(f"{len(texts)} WordNet definitions, batch {args.batch}, max_seq_length {length}, {args.threads} threads, "
          f"{args.rounds} interleaved rounds")
    print("| encoder | sentences/s: median (min–max) | ratio vs folder | min cosine to folder |")
    print("|---|---|---|---|")
    for label, rate in rates.items():
        cosine = onnx_graph.cosines(vectors[label], vectors["sentence-transformers folder"]).min()
        print(f"| {label} | {harness.format_spread(rate)} | {rate['median'] / reference:.2f}× | {cosine:.5f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
