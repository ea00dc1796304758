"""python -m embed_jax.convert.hf --workdir=DIR --out=FOLDER [--stage=stage3] [--default_head=DIM] [--overwrite]

Writes a trained student as a sentence-transformers folder that loads offline with no custom code
(`SentenceTransformer(FOLDER)`). What is written and where each part comes from: embed_jax/convert/st_export.py;
usage: docs/export.md.
"""
from __future__ import annotations

import errno
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags
from absl import logging as absl_logging

from embed_jax import cli
from embed_jax.convert import hub_push, st_export
from embed_jax.assets import AssetError

EXIT_CODE = 1  # a usage or export error

FLAGS = cli.program_flags()
_WORKDIR = flags.DEFINE_string("workdir", None, "The training --workdir (holding stage1, stage2, ...).",
                               flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Folder to write the sentence-transformers model into.", flag_values=FLAGS)
_STAGE = flags.DEFINE_string("stage", None, "Stage to export (default: the last trained one, e.g. stage3).",
                             flag_values=FLAGS)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the stage's latest).", flag_values=FLAGS)
_DEFAULT_HEAD = flags.DEFINE_integer("default_head", None, "Head dimension modules.json uses (default: FC1, the "
                                     "teacher-dimension head).", flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a previous export in --out (its listed files only).",
                               flag_values=FLAGS)
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Folder with the student's tokenizer (default: the run's "
                                 "init_from).", flag_values=FLAGS)
_RECORDS_DIR = flags.DEFINE_list("records_dir", [], "The training records folder(s) (default: found beside the "
                                 "workdir).", flag_values=FLAGS)
_SKIP_RECORDS = flags.DEFINE_bool("skip_records", False, "Export without locating the training records.",
                                  flag_values=FLAGS)
_EVAL_JSON = flags.DEFINE_string("eval_json", None, "python -m embed_jax.eval's results.json: the model card's table, "
                                 "and the results.png beside it as the card's chart.",
                                 flag_values=FLAGS)
_MAX_SEQ_LENGTH = flags.DEFINE_integer("max_seq_length", None, "sentence-transformers max_seq_length (default: the "
                                       "source folder's).", flag_values=FLAGS)
_TITLE = flags.DEFINE_string("title", None, "Model card title.", flag_values=FLAGS)
_BASE_MODEL = flags.DEFINE_string("base_model", None, "The card's base_model: the Hub id of the model the run "
                                  "started from (default: known for the bundled assets, else left out).",
                                  flag_values=FLAGS)
_PUSH_TO_HUB = flags.DEFINE_string("push_to_hub", None, "After the export, upload the folder to this Hub model "
                                   "repository (ORG/NAME; needs a token: hf auth login or HF_TOKEN).",
                                   flag_values=FLAGS)
_PRIVATE = flags.DEFINE_bool("private", False, "With --push_to_hub: create the repository private.",
                             flag_values=FLAGS)
# Orbax logs every restore at INFO through absl; the lines this program prints say what matters.
_VERBOSITY = flags.DEFINE_integer("verbosity", None, "absl log level (0 shows Orbax's and jax's INFO lines; default: "
                                  "warnings only).", flag_values=FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.parse(FLAGS, argv, doc=__doc__)
        if _WORKDIR.value is None or _OUT.value is None:
            raise cli.UsageError("--workdir (the training workdir) and --out (the folder to write) are required")
        if _PUSH_TO_HUB.value:
            hub_push.check_push(_PUSH_TO_HUB.value)  # before any work: the id, a token, the Hub not switched off
    except (cli.UsageError, hub_push.PushError) as error:
        return cli.fail(error, code=EXIT_CODE)
    if _VERBOSITY.value is None:
        absl_logging.set_verbosity(absl_logging.WARNING)
    else:
        absl_logging.use_absl_handler()  # what app.run would install: absl's lines on stderr
        absl_logging.set_verbosity(_VERBOSITY.value)
    try:
        result = st_export.export(_WORKDIR.value, _OUT.value, stage=_STAGE.value, step=_STEP.value,
                                  default_head=_DEFAULT_HEAD.value, overwrite=_OVERWRITE.value,
                                  tokenizer=_TOKENIZER.value, records_dirs=_RECORDS_DIR.value,
                                  skip_records=_SKIP_RECORDS.value, eval_json=_EVAL_JSON.value,
                                  max_seq_length=_MAX_SEQ_LENGTH.value, title=_TITLE.value,
                                  base_model=_BASE_MODEL.value)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # the disk, not the input: name the file
            return cli.fail(cli.write_failed(error, "out", Path(_OUT.value)), code=EXIT_CODE)
        return cli.fail(error, code=EXIT_CODE)
    except (ValueError, AssetError) as error:
        return cli.fail(error, code=EXIT_CODE)
    print(f"wrote {result.folder} from {result.stage} step {result.step}: heads {', '.join(map(str, result.heads))}, "
          f"default {result.default_head}")
    for notice in result.notices:
        print(f"note: {notice}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    print(f"load it with: SentenceTransformer({str(result.folder)!r})")
    if _PUSH_TO_HUB.value:
        try:
            url = hub_push.push(result.folder, _PUSH_TO_HUB.value, private=_PRIVATE.value)
        except hub_push.PushError as error:
            return cli.fail(error, code=EXIT_CODE)
        print(f"pushed to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
