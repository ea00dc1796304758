r"""python -m embed_jax.teachers.caption_export --output_dir=DIR (--text_student=STAGE_DIR | --text_teacher=FOLDER)

Image–caption records for stage 4 (embed_jax/teachers/caption_targets.py: what the vectors are and where they come
from; docs/vision_student.md):

    python -m embed_jax.teachers.caption_export --text_student=runs/default/train/stage3_pairs \
        --output_dir=runs/vision/records/train --split=train
    python -m embed_jax.teachers.caption_export --text_student=runs/default/train/stage3_pairs \
        --output_dir=runs/vision/records/held_out --split=held_out
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from absl import flags

from embed_jax import cli
from embed_jax.data import digits
from embed_jax.data.records import RecordsError
from embed_jax.teachers import caption_targets

FLAGS = cli.program_flags()
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder for the image–caption records.", flag_values=FLAGS)
_SPLIT = flags.DEFINE_enum("split", "train", digits.SPLITS, "Which images.", flag_values=FLAGS)
_DATASET = flags.DEFINE_enum("dataset", "digits", caption_targets.DATASETS, "Image set.", flag_values=FLAGS)
_TEXT_STUDENT = flags.DEFINE_string("text_student", "", "A trained text stage folder (self-distillation).",
                                    flag_values=FLAGS)
_TEXT_TEACHER = flags.DEFINE_string("text_teacher", "", "Or a sentence-transformers folder.", flag_values=FLAGS)
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "Default: the text stage's own (its run's data.tokenizer, else "
                                 "model.init_from).", flag_values=FLAGS)
_STORAGE_DTYPE = flags.DEFINE_enum("storage_dtype", "float32", ("float16", "float32"), "Vector storage dtype.",
                                   flag_values=FLAGS)
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 4096, "Records per shard.", flag_values=FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.parse(FLAGS, argv, doc=__doc__)
        cli.require(FLAGS, ["output_dir"])
    except cli.UsageError as error:
        return cli.fail(error)
    try:
        manifest = caption_targets.export_digits(
            _OUTPUT_DIR.value, _SPLIT.value, text_student=_TEXT_STUDENT.value, text_teacher=_TEXT_TEACHER.value,
            tokenizer=_TOKENIZER.value, storage_dtype=_STORAGE_DTYPE.value, shard_size=_SHARD_SIZE.value)
    except (RecordsError, ValueError, FileNotFoundError) as error:
        return cli.fail(error)
    heads = ", ".join(teacher.name for teacher in manifest.teachers)
    print(f"[caption_export] {manifest.num_records:,} image–caption records ({_SPLIT.value}; heads {heads}) in "
          f"{_OUTPUT_DIR.value}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    # Text paths are local folders: never reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.exit(main())
