"""python -m embed_jax.convert.onnx --model=FOLDER --out=OUT [--head=DIM] [--all_heads] [--quantize=int8] [--overwrite]

Writes one ONNX graph from an exported sentence-transformers folder (python -m embed_jax.convert.hf): token ids and
mask in, the head's normalised vector out, with backbone, pooling, Dense and Normalize inside
(embed_jax/convert/onnx_graph.py; docs/export.md, "ONNX").
"""
from __future__ import annotations

import sys

from absl import app, flags
from absl import logging as absl_logging

from embed_jax.convert import onnx_graph

_MODEL = flags.DEFINE_string("model", None, "The sentence-transformers folder to convert (an embed_jax export).")
_OUT = flags.DEFINE_string("out", None, "Folder to write model.onnx, the tokenizer and onnx_export.json into.")
_HEAD = flags.DEFINE_integer("head", None, "Head dimension of the sentence_embedding output (default: the folder's "
                             "default head, the one modules.json uses).")
_ALL_HEADS = flags.DEFINE_bool("all_heads", False, "Also output every head as sentence_embedding_{dim}.")
_QUANTIZE = flags.DEFINE_enum("quantize", None, ["int8"], "Also write model_int8.onnx (dynamic int8 quantisation).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an earlier ONNX export in --out.")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if _MODEL.value is None or _OUT.value is None:
        raise app.UsageError("--model (an exported sentence-transformers folder) and --out are required")
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)  # the quantiser logs every node at INFO
    try:
        result = onnx_graph.export_onnx(_MODEL.value, _OUT.value, head=_HEAD.value, all_heads=_ALL_HEADS.value,
                                        quantize=_QUANTIZE.value, overwrite=_OVERWRITE.value)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    outputs = ", ".join(f"{name} ({dim})" for name, dim in result.outputs.items())
    parity = min(result.parity.values())
    print(f"wrote {result.folder}: {', '.join(result.files)}\noutputs: {outputs}\nonnxruntime vs torch on "
          f"{len(onnx_graph.PARITY_TEXTS)} sentences: min cosine {parity:.7f}")
    if result.int8_cosine:
        print(f"int8 vs fp32 graph: min cosine {min(result.int8_cosine.values()):.5f}")
    return 0


if __name__ == "__main__":
    app.run(main)
