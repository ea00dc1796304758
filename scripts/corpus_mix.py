"""The built-in corpus mix as a Markdown table: texts per source and their length in word pieces.

    .venv/bin/python scripts/corpus_mix.py [--corpus=all+bible+fortunes]

Lengths are counted with the all-MiniLM-L6-v2 tokenizer (the default student's), special tokens included, untruncated.
"""
from __future__ import annotations

import collections
import sys

import numpy as np
from absl import app, flags

from embed_jax.assets import resolve_model_path
from embed_jax.cli import exit_on_help
from embed_jax.data import corpora

CORPUS = flags.DEFINE_string("corpus", "all+bible+fortunes", "a built-in corpus name (names join with '+')")


def source_of(record_id: str) -> str:
    source = record_id.split(":")[0]
    if source == "wordnet":
        return "wordnet definitions" if record_id.endswith(":definition") else "wordnet examples"
    return source


def main(argv) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(resolve_model_path("asset:all-MiniLM-L6-v2") / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    texts = corpora.builtin_texts(CORPUS.value)
    by_source = collections.defaultdict(list)
    for item, encoding in zip(texts, tokenizer.encode_batch([item.text for item in texts])):
        by_source[source_of(item.id)].append(len(encoding.ids))
    lengths = np.concatenate([np.array(values) for values in by_source.values()])
    print(f"| source ({CORPUS.value}) | texts | share | tokens: median | p90 | max | share > 128 |")
    print("|---|---|---|---|---|---|---|")
    for source, values in sorted(by_source.items(), key=lambda item: -len(item[1])) + [("all", list(lengths))]:
        values = np.array(values)
        print(f"| {source} | {len(values):,} | {len(values) / len(lengths):.1%} | {np.median(values):.0f} | "
              f"{np.percentile(values, 90):.0f} | {values.max()} | {np.mean(values > 128):.1%} |")


if __name__ == "__main__":
    exit_on_help(sys.argv, doc=__doc__)
    sys.exit(app.run(main))
