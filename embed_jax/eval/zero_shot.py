"""python -m embed_jax.eval.zero_shot --workdir=runs/vision/train [--tokenizer=FOLDER] [--output=FILE.json]

Zero-shot digits (embed_jax/eval/digits.py) for a trained image stage: held-out accuracy and image→caption R@1 of
every head, as a Markdown table. --workdir is a training workdir (its newest image stage) or a stage folder.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from embed_jax import cli
from embed_jax.eval import digits
from embed_jax.train import trained_student, workdir

FLAGS = cli.program_flags()
_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir (its last image stage) or a stage folder.",
                               flag_values=FLAGS)
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "Default: the stage's own (its run's data.tokenizer, else "
                                 "model.init_from).", flag_values=FLAGS)
_OUTPUT = flags.DEFINE_string("output", "", "Also write the figures as JSON here.", flag_values=FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.parse(FLAGS, argv, doc=__doc__)
        cli.require(FLAGS, ["workdir"])
    except cli.UsageError as error:
        return cli.fail(error)
    run_dir = workdir.absolute_workdir(_WORKDIR.value)
    try:
        stage_dir = run_dir if workdir.is_stage_folder(run_dir) else digits.last_image_stage(run_dir)
        student = trained_student.load_student(stage_dir)
        results = digits.evaluate_digits_all_heads(student, str(trained_student.tokenizer_folder(stage_dir,
                                                                                                 _TOKENIZER.value)))
    except (FileNotFoundError, ValueError) as error:
        return cli.fail(error)
    print(f"zero-shot digits, {len(digits.held_out_images()[1])} held-out images, {stage_dir}\n")
    print("| head | " + " | ".join(digits.METRICS) + " |\n|---|" + "---|" * len(digits.METRICS))
    for dim, figures in results.items():
        print(f"| {dim} | " + " | ".join(f"{100 * figures[name]:.1f}%" for name in digits.METRICS) + " |")
    if _OUTPUT.value:
        Path(_OUTPUT.value).write_text(json.dumps({str(dim): figures for dim, figures in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
