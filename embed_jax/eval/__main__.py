r"""python -m embed_jax.eval --model=SPEC [--model=SPEC ...] --out=DIR

Scores each model, and each of its heads, on the hold-out that training never sees (docs/eval.md), and writes
DIR/results.json and DIR/results.md (one row per model × head). For example, both teachers, the concatenated teacher
and a trained workdir:

    python -m embed_jax.eval --out=runs/eval \
        --model=asset:all-MiniLM-L6-v2 --model=asset:all-mpnet-base-v2 \
        --model=concat:asset:all-MiniLM-L6-v2+asset:all-mpnet-base-v2 --model=runs/default/train

Specs: embed_jax/eval/specs.py. Encoded vectors are cached in DIR/cache (--no_cache to skip). Asymmetric retrieval
(queries by a student's FC1, documents by its teachers) and quantised vectors are extra rows of the retrieval tasks:

    python -m embed_jax.eval --out=runs/eval --model=runs/default/train --model=asym:runs/default/train \
        --quantize=int8,binary
"""
from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from embed_jax import cli
from embed_jax.eval import encoding, mteb_task, overlap, quantized, report, runner, specs, tasks

FLAGS = cli.program_flags()
_MODEL = flags.DEFINE_multi_string("model", None, "A model to score (repeat for several); the forms are listed "
                                   "above (embed_jax/eval/specs.py).", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Folder for results.json, results.md and cache/.", flag_values=FLAGS)
_TASKS = flags.DEFINE_string("tasks", ",".join(tasks.DEFAULT_TASKS), "Comma-separated tasks (default: all of "
                             f"{', '.join(tasks.DEFAULT_TASKS)}); your own data as beir:FOLDER[:SPLIT] (corpus.jsonl, "
                             "queries.jsonl, qrels/SPLIT.tsv) or pairs:FILE (text1, text2, score); an MTEB task as "
                             "mteb:TASKNAME (the mteb extra).", flag_values=FLAGS)
_MAX_LENGTH = flags.DEFINE_integer("max_length", 0, "Token window for every model (default 0: each model's own).",
                                   flag_values=FLAGS)
_PCA_FIT_TEXTS = flags.DEFINE_integer("pca_fit_texts", encoding.EncodeContext.pca_fit_texts, "Built-in training "
                                      "texts that pca:SPEC@DIM is fitted on.", flag_values=FLAGS)
_ALLOW_OVERLAP = flags.DEFINE_bool("allow_overlap", False, "Score models whose training records overlap the "
                                   "hold-out (their rows are marked).", flag_values=FLAGS)
_QUANTIZE = flags.DEFINE_string("quantize", "", "Comma-separated precisions scored as extra rows of the retrieval "
                                f"tasks: {', '.join(quantized.QUANTISED)} (sentence-transformers' quantize_embeddings; "
                                "embed_jax/eval/quantized.py).", flag_values=FLAGS)
_MTEB_RESULTS = flags.DEFINE_string("mteb_results", None, "Also write the mteb: tasks' results in mteb's own "
                                    "format and layout into this folder (DIR/MODEL/REVISION/TASK.json, one model "
                                    "per model × head).", flag_values=FLAGS)
_NO_CACHE = flags.DEFINE_bool("no_cache", False, "Do not read or write DIR/cache.", flag_values=FLAGS)
_PROGRESS_EVERY_S = flags.DEFINE_float("progress_every_s", 10.0, "Seconds between progress lines.",
                                       flag_values=FLAGS)
USER_ERRORS = (encoding.ModelSpecError, tasks.UnknownTaskError, tasks.TaskDataError, overlap.HoldoutOverlapError,
               overlap.TrainingRecordsError, report.OutputFolderError, quantized.QuantisationError)


def is_output_write(error: OSError, out: Path) -> bool:
    """Whether an OSError met while evaluating is a failed write under --out (the encodings cache), or the disk's
    (full, read-only), rather than a model or task file that could not be read (those keep their own errors)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return True
    return bool(error.filename) and Path(os.fsdecode(error.filename)).resolve().is_relative_to(out.resolve())


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cli.parse(FLAGS, argv, doc=f"{__doc__}\nModel specs (--model=SPEC):\n\n{specs.spec_help()}")
        cli.require(FLAGS, ["model", "out"])
    except cli.UsageError as error:
        return cli.fail(error)
    if _MAX_LENGTH.value < 0 or _PCA_FIT_TEXTS.value <= 0:
        return cli.fail("--max_length must be ≥ 0 and --pca_fit_texts > 0")
    out = Path(_OUT.value)
    context = encoding.EncodeContext(cache_dir=None if _NO_CACHE.value else out / "cache",
                                     progress_every_s=_PROGRESS_EVERY_S.value, max_length=_MAX_LENGTH.value,
                                     pca_fit_texts=_PCA_FIT_TEXTS.value, allow_overlap=_ALLOW_OVERLAP.value)
    try:
        precisions = quantized.parse_precisions(_QUANTIZE.value)
        cli.check_output_folder(out, "out")
        report.check_output_folder(out)
        results = runner.evaluate(_MODEL.value, [name.strip() for name in _TASKS.value.split(",") if name.strip()],
                                  context, precisions)
    except (*USER_ERRORS, cli.UsageError) as error:
        return cli.fail(error)
    except OSError as error:
        if not is_output_write(error, out):
            raise
        return cli.fail(cli.write_failed(error, "out", out), code=cli.FAULT_EXIT_CODE)
    results["command"] = ["python", "-m", "embed_jax.eval", *argv]
    try:
        json_path, markdown_path = report.write_report(results, out)
    except OSError as error:  # a disk that filled up or went read-only since the check above
        return cli.fail(cli.write_failed(error, "out", out), code=cli.FAULT_EXIT_CODE)
    if _MTEB_RESULTS.value:
        written = mteb_task.write_results(results["rows"], Path(_MTEB_RESULTS.value))
        print(f"[eval] wrote {len(written)} mteb result file(s) under {_MTEB_RESULTS.value}"
              + ("" if written else " (no mteb: task ran: the other tasks have no mteb format)"), file=sys.stderr)
    print(report.markdown(results))
    print(f"[eval] wrote {json_path} and {markdown_path}", file=sys.stderr)
    unchecked = {row["model"]: row["holdout"]["note"] for row in results["rows"]
                 if row["holdout"]["status"] == overlap.UNCHECKED}
    for model, note in unchecked.items():
        print(f"[eval] warning: {model}: hold-out overlap unchecked ({note})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
