"""Why a distilled student retrieves worse than its start: its fit to the target against what that fit should cost.

    .venv/bin/python scripts/retrieval_probe.py --student=runs/results/train150k --out=runs/results/eval

Reads (or encodes) the vectors of the evaluation suite's texts through the evaluation's model specs and vector cache
(--out/cache: point it at the folder `python -m embed_jax.eval --out=...` wrote and nothing is encoded again): the
student (every head), its start (--start), and the target it was trained on (`asym:`'s resolution from the student's
records and run config: the weighted concatenation of its teachers). On WordNet definition retrieval it then prints,
and writes as retrieval_probe.md / .json under --out, one row per vector set:

- fit: the median cosine of each text's vector to its target vector (the quantity the cosine loss maximises);
- MRR@10 (and R@1) of usage examples against definitions.

Beside the models it scores two references that separate *how much* the student misses the target from *how* it
misses it (docs/training.md, "Why retrieval falls below the start"):

- the target plus isotropic Gaussian noise, scaled so that its fit equals the student's main head's: the cost of an
  error of the student's size that carries no structure;
- the least-squares linear map of the start's vectors (and of the student's pooled vectors) onto the target, fitted on
  the suite's own texts. In-sample, so it fits them at least as well as any linear head trained elsewhere: the
  ceiling of a linear FC1 on a frozen encoder (stage 1), in fit, and what that fit does to retrieval.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from absl import flags

from embed_jax import cli
from embed_jax.eval import encoding, runner, specs, tasks, wordnet

FLAGS = cli.program_flags()
_STUDENT = flags.DEFINE_string("student", None, "The student: a workdir, a stage folder or an exported folder whose "
                               "training records can be found (as for asym:).", flag_values=FLAGS)
_START = flags.DEFINE_string("start", "asset:all-MiniLM-L6-v2", "The model the student started from.",
                             flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Folder for the table and cache/ (an evaluation's --out reuses its vectors).",
                           flag_values=FLAGS)
_SPLIT = flags.DEFINE_enum("split", wordnet.HOLDOUT, sorted(wordnet.SPLITS), "WordNet split to retrieve on.",
                           flag_values=FLAGS)
SPLIT_TASKS = {wordnet.HOLDOUT: "wordnet_retrieval", wordnet.VALIDATION: "wordnet_validation"}
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the noise reference.", flag_values=FLAGS)


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def median_fit(vectors: np.ndarray, target: np.ndarray) -> float | None:
    """None for vectors of another dim than the target's (a start model, a reduction head): no fit without a map."""
    if vectors.shape[1] != target.shape[1]:
        return None
    return float(np.median(np.sum(unit(vectors) * unit(target), axis=1)))


def retrieval_metrics(task: tasks.Task, vectors: np.ndarray, index: dict[str, int]) -> dict[str, float]:
    """The evaluation's own scoring of `task` (recall@1, recall@10, MRR@10) on these vectors of the indexed texts."""
    return task.score(tasks.TextVectors(index=index, matrix=encoding.unit_float32(vectors))).metrics


def comparable_heads(student_spec: str, student_dim: int, target_spec: str, target_dim: int) -> None:
    """The fit and the noise reference compare the student's default head with its target: refuse other dims."""
    if student_dim != target_dim:
        raise ValueError(f"--student={student_spec}: its default head is {student_dim}-d but its target {target_spec} "
                         f"is {target_dim}-d, so the probe has no fit to compare; give a student whose default head "
                         f"is its teachers' head (FC1, model.teacher_dim)")


def noise_scale(fit: float, dim: int) -> float:
    """σ of i.i.d. N(0, σ²) noise whose sum with a unit vector has cosine `fit` to it (in expectation, large dim):
    cos = 1 / √(1 + dim·σ²)."""
    if not 0 < fit < 1:
        raise ValueError(f"a fit of {fit} leaves no noise to match; the probe needs 0 < fit < 1")
    return float(np.sqrt((1 / fit ** 2 - 1) / dim))


def with_matched_noise(target: np.ndarray, fit: float, seed: int) -> np.ndarray:
    target = unit(target)
    noise = np.random.default_rng(seed).standard_normal(target.shape) * noise_scale(fit, target.shape[1])
    return target + noise


def least_squares_map(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """source·W + b closest to the target in squared error (the affine map a linear head can learn), in-sample."""
    design = np.concatenate([unit(source), np.ones((len(source), 1))], axis=1)
    weights, *_ = np.linalg.lstsq(design, unit(target), rcond=None)
    return design @ weights


def probe_rows(named: dict[str, np.ndarray], target: np.ndarray, main: str, pooled: str | None,
               start: str, seed: int) -> dict[str, np.ndarray]:
    """Every row's vectors: the models' own, then the two references (the noise matched on all the texts given)."""
    rows = dict(named)
    rows[f"target + isotropic noise at {main}'s fit"] = with_matched_noise(target, median_fit(named[main], target),
                                                                          seed)
    rows[f"least-squares linear map of {start} onto the target (in-sample)"] = least_squares_map(named[start], target)
    if pooled is not None:
        rows[f"least-squares linear map of {pooled} onto the target (in-sample)"] = least_squares_map(named[pooled],
                                                                                                      target)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| vectors | fit: median cos to the target | WN R@1 | WN MRR@10 |", "|---|---|---|---|"]
    for row in rows:
        fit = "—" if row["fit"] is None else f"{row['fit']:.3f}"
        lines.append(f"| {row['name']} | {fit} | {row['recall@1']:.4f} | {row['mrr@10']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.parse(FLAGS, argv, doc=__doc__)
        cli.require(FLAGS, ["student", "out"])
    except cli.UsageError as error:
        return cli.fail(error)
    out = Path(_OUT.value)
    context = encoding.EncodeContext(cache_dir=out / "cache")
    loader = specs.ModelLoader(context)
    try:
        student = loader.load(_STUDENT.value)
        target_spec = specs.teachers_spec(f"asym:{_STUDENT.value}", student)
        start, target_model = loader.load(_START.value), loader.load(target_spec)
        comparable_heads(_STUDENT.value, student.heads[student.default_head], target_spec,
                         target_model.heads[target_model.default_head])
    except (encoding.ModelSpecError, ValueError) as error:
        return cli.fail(error)
    task = tasks.load_task(SPLIT_TASKS[_SPLIT.value])
    # The evaluation suite's texts, in its order: the vectors an evaluation of the same models cached.
    texts = list(dict.fromkeys(runner.suite_texts(tasks.load_tasks(tasks.DEFAULT_TASKS)) + list(task.texts())))
    index = {text: row for row, text in enumerate(texts)}
    on_task = np.array([index[text] for text in task.texts()])

    target = encoding.encode(target_model, texts, context)[target_model.default_head]
    named = {f"{target_spec} (the target)": target,
             _START.value: encoding.encode(start, texts, context)[start.default_head]}
    student_vectors = encoding.encode(student, texts, context)
    heads = {head: f"{_STUDENT.value} · {head}" for head in student_vectors}
    for head, name in heads.items():
        named[name] = student_vectors[head]
    try:
        vectors = probe_rows(named, target, heads[student.default_head], heads.get("pooled"), _START.value,
                             _SEED.value)
    except ValueError as error:  # a student that fits its target exactly (or not at all) has no noise to match
        return cli.fail(f"--student={_STUDENT.value}: {error}")
    rows = [{"name": name, "fit": median_fit(array[on_task], target[on_task]),
             **retrieval_metrics(task, array, index)} for name, array in vectors.items()]
    retrieval = wordnet.definition_retrieval_set(_SPLIT.value)
    queries, corpus = retrieval.queries, retrieval.corpus
    text = (f"WordNet definition retrieval ({_SPLIT.value}: {len(queries):,} usage examples against "
            f"{len(corpus):,} definitions); fit over those texts' vectors\n\n" + table(rows))
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "retrieval_probe.md").write_text(text, encoding="utf-8")
    (out / "retrieval_probe.json").write_text(json.dumps({"student": _STUDENT.value, "target": target_spec,
                                                          "split": _SPLIT.value, "rows": rows}, indent=1) + "\n",
                                              encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
