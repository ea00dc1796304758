r"""python -m embed_jax.convert.shrink_cached --records=DIR --teacher=NAME --dims=128,64 --out=FOLDER

A frozen model's vectors cached in teacher records → small linear heads trained in seconds → a sentence-transformers
folder (docs/shrink.md; the training: embed_jax/train/shrink_heads.py; the folder: embed_jax/convert/shrink_folder.py).

    python -m embed_jax.convert.shrink_cached --records=runs/default/records --teacher=mpnet --dims=128,64 \
        --out=runs/shrink/mpnet
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import flags

from embed_jax import cli
from embed_jax.convert import shrink_folder
from embed_jax.train.shrink_heads import ShrinkError

EXIT_CODE = 1  # a usage error or bad input

FLAGS = cli.program_flags()
_RECORDS = flags.DEFINE_string("records", None, "Teacher records folder (python -m embed_jax.teachers.export).",
                               flag_values=FLAGS)
_TEACHER = flags.DEFINE_string("teacher", None, "The teacher (name in the records' manifest) to shrink.",
                               flag_values=FLAGS)
_DIMS = flags.DEFINE_list("dims", None, "Head dimensions, e.g. 128,64 (the first is the folder's default).",
                          flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "New folder for the sentence-transformers model (never overwritten).",
                           flag_values=FLAGS)
_STEPS = flags.DEFINE_integer("steps", 2000, "Optimizer steps.", flag_values=FLAGS)
_BATCH = flags.DEFINE_integer("batch", 128, "Global batch size (the in-batch losses compare its pairs).",
                              flag_values=FLAGS)
_LR = flags.DEFINE_float("lr", 1e-3, "Peak learning rate (warm-up 5%, cosine to 0).", flag_values=FLAGS)
_HOLDOUT = flags.DEFINE_integer("holdout", 512, "Records held out to report the loss on.", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the hold-out split, the heads' init and the batch order.",
                             flag_values=FLAGS)
_LOG_EVERY = flags.DEFINE_integer("log_every", 100, "Steps between progress lines.", flag_values=FLAGS)


def parse_dims(values: Sequence[str]) -> list[int]:
    try:
        return [int(value) for value in values]
    except ValueError:
        raise ShrinkError(f"--dims={','.join(values)}: give comma-separated positive integers, e.g. 128,64") from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.parse(FLAGS, argv, doc=__doc__)
        cli.require(FLAGS, ["records", "teacher", "dims", "out"])
    except cli.UsageError as error:
        return cli.fail(error, code=EXIT_CODE)
    try:
        shrink_folder.shrink(_RECORDS.value, _TEACHER.value, parse_dims(_DIMS.value), _OUT.value, steps=_STEPS.value,
                             batch=_BATCH.value, learning_rate=_LR.value, holdout=_HOLDOUT.value, seed=_SEED.value,
                             log_every=_LOG_EVERY.value)
    except (OSError, ValueError) as error:
        return cli.fail(error, code=EXIT_CODE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
