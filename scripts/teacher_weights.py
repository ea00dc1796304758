"""The weighted distillation target on a validation task, for choosing data.teacher_weights (docs/training.md).

    .venv/bin/python scripts/teacher_weights.py --out=runs/teacher_weights [--task=wordnet_validation]

Encodes the task's texts once with each of the two teachers (through the evaluation's model specs and its vector
cache, --out/cache: a second run reads them back), then scores the target concat:A+B@w,1−w (embed_jax/eval/specs.py)
for each w of --weights, w being the first teacher's weight. Prints a Markdown table (recall@1, MRR@10), and writes it
with teacher_weights.json and a line plot teacher_weights.png under --out.

The task must be a validation split (default wordnet_validation: training-side WordNet synsets,
embed_jax/eval/wordnet.py); the default suite's tasks are the evaluation hold-out and are refused: a knob chosen on
the hold-out would make every later score on it optimistic.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from absl import flags

from embed_jax import cli
from embed_jax.eval import encoding, runner, tasks

FLAGS = cli.program_flags()
_OUT = flags.DEFINE_string("out", None, "Folder for the table, the plot and cache/ (the teachers' vectors).",
                           flag_values=FLAGS)
_TASK = flags.DEFINE_string("task", "wordnet_validation", "A validation task (not one of the default suite's).",
                            flag_values=FLAGS)
_TEACHERS = flags.DEFINE_list("teachers", ["asset:all-MiniLM-L6-v2", "asset:all-mpnet-base-v2"],
                              "The two teachers' model specs, in the records' teacher order.", flag_values=FLAGS)
_WEIGHTS = flags.DEFINE_list("weights", ["0", "0.1", "0.15", "0.2", "0.25", "0.3", "0.4", "0.5", "0.6", "0.75", "1"],
                             "The first teacher's weights w (the second's is 1 − w).", flag_values=FLAGS)
METRICS = ("recall@1", "mrr@10")


def target_spec(teachers: Sequence[str], weight: float) -> str:
    return f"concat:{teachers[0]}+{teachers[1]}@{weight:g},{1 - weight:g}"


def table(task: str, teachers: Sequence[str], rows: Sequence[dict]) -> str:
    lines = [f"| w ({teachers[0]}) | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for row in rows:
        lines.append(f"| {row['weight']:g} | " + " | ".join(f"{row[metric]:.4f}" for metric in METRICS) + " |")
    return f"{task}, target concat:{teachers[0]}+{teachers[1]}@w,1−w\n\n" + "\n".join(lines) + "\n"


def plot(task: str, teachers: Sequence[str], rows: Sequence[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.0, 4.0))
    for metric in METRICS:
        axis.plot([row["weight"] for row in rows], [row[metric] for row in rows], marker="o", label=metric)
    axis.set_xlabel(f"w, the weight of {teachers[0]} (1 − w: {teachers[1]})")
    axis.set_ylabel("score")
    axis.set_title(task)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.parse(FLAGS, argv, doc=__doc__)
        cli.require(FLAGS, ["out"])
        if len(_TEACHERS.value) != 2:
            raise cli.UsageError(f"--teachers names {len(_TEACHERS.value)} specs; give two, comma-separated")
        weights = [float(value) for value in _WEIGHTS.value]
        if any(not 0 <= weight <= 1 for weight in weights):
            raise cli.UsageError(f"--weights={','.join(_WEIGHTS.value)}: each w must be in [0, 1]")
    except (cli.UsageError, ValueError) as error:
        return cli.fail(error)
    if _TASK.value in tasks.DEFAULT_TASKS:
        return cli.fail(f"--task={_TASK.value} is a task of the evaluation suite (its hold-out); choose the weights on "
                        f"a validation split, e.g. --task=wordnet_validation")
    out = Path(_OUT.value)
    teachers = list(_TEACHERS.value)
    context = encoding.EncodeContext(cache_dir=out / "cache")
    specs = [target_spec(teachers, weight) for weight in weights]
    try:
        results = runner.evaluate(specs, [_TASK.value], context)
    except (tasks.UnknownTaskError, encoding.ModelSpecError) as error:
        return cli.fail(error)
    rows = [{"weight": weight, "spec": row["model"],
             **{metric: row["metrics"][runner.metric_key(_TASK.value, metric)] for metric in METRICS}}
            for weight, row in zip(weights, results["rows"])]
    text = table(_TASK.value, teachers, rows)
    print(text)
    (out / "teacher_weights.md").write_text(text, encoding="utf-8")
    (out / "teacher_weights.json").write_text(json.dumps({"task": _TASK.value, "counts": results["tasks"][_TASK.value][
        "counts"], "teachers": teachers, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {plot(_TASK.value, teachers, rows, out / 'teacher_weights.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
