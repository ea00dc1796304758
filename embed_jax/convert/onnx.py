"""python -m embed_jax.convert.onnx --model=FOLDER --out=OUT [--head=DIM] [--all_heads] [--quantize=int8] [--overwrite]

Writes one ONNX graph from an exported sentence-transformers folder (python -m embed_jax.convert.hf): token ids and
mask in, the head's normalised vector out, with backbone, pooling, Dense and Normalize inside
(embed_jax/convert/onnx_graph.py; docs/export.md, "ONNX").
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import flags
from absl import logging as absl_logging

from embed_jax import cli
from embed_jax.convert import onnx_graph

EXIT_CODE = 1  # a usage or export error, as python -m embed_jax.convert.hf

FLAGS = cli.program_flags()
_MODEL = flags.DEFINE_string("model", None, "The sentence-transformers folder to convert (an embed_jax export).",
                             flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Folder to write model.onnx, the tokenizer and onnx_export.json into.",
                           flag_values=FLAGS)
_HEAD = flags.DEFINE_integer("head", None, "Head dimension of the sentence_embedding output (default: the folder's "
                             "default head, the one modules.json uses).", flag_values=FLAGS)
_ALL_HEADS = flags.DEFINE_bool("all_heads", False, "Also output every head as sentence_embedding_{dim}.",
                               flag_values=FLAGS)
_QUANTIZE = flags.DEFINE_enum("quantize", None, ["int8"], "Also write model_int8.onnx (dynamic int8 quantisation).",
                              flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an earlier ONNX export in --out.", flag_values=FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.parse(FLAGS, argv, doc=__doc__)
        cli.require(FLAGS, ["model", "out"])
    except cli.UsageError as error:
        return cli.fail(error, code=EXIT_CODE)
    absl_logging.set_verbosity(absl_logging.WARNING)  # the quantiser logs every node at INFO
    try:
        result = onnx_graph.export_onnx(_MODEL.value, _OUT.value, head=_HEAD.value, all_heads=_ALL_HEADS.value,
                                        quantize=_QUANTIZE.value, overwrite=_OVERWRITE.value)
    except (OSError, ValueError) as error:
        return cli.fail(error, code=EXIT_CODE)
    outputs = ", ".join(f"{name} ({dim})" for name, dim in result.outputs.items())
    parity = min(result.parity.values())
    print(f"wrote {result.folder}: {', '.join(result.files)}\noutputs: {outputs}\nonnxruntime vs torch on "
          f"{len(onnx_graph.PARITY_TEXTS)} sentences: min cosine {parity:.7f}")
    if result.int8_cosine:
        print(f"int8 vs fp32 graph: min cosine {min(result.int8_cosine.values()):.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
