"""Run the suite: load every model (refusing bad specs and hold-out overlap before any encoding), embed the union of
the tasks' texts once per model, score each head on each task, and collect one row per model × head."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np

from embed_jax.eval import encoding, quantized, tasks as task_registry
from embed_jax.eval.encoding import EncodeContext, EvalModel
from embed_jax.eval.specs import ModelLoader
from embed_jax.eval.tasks import Task, TaskResult, TextVectors

# The suite's mean (docs/eval.md): one headline metric per task, so each task weighs the same.
HEADLINE = (("lee_similarity", "spearman"), ("lee_retrieval", "ndcg@10"), ("wordnet_retrieval", "mrr@10"))


def metric_key(task: str, metric: str) -> str:
    return f"{task}/{metric}"


def headline_keys(suite: Sequence[Task]) -> tuple[list[str], str]:
    """(the metric keys a row's mean averages, what they are): the built-in suite's three headline metrics when the
    run has those three tasks, else each task's first metric (its headline: nDCG@10 for beir:, Spearman for pairs:,
    mteb's main score), so that a run of the user's own tasks still has a mean over what it ran."""
    names = [task.name for task in suite]
    if all(task in names for task, _ in HEADLINE):
        keys = [metric_key(task, metric) for task, metric in HEADLINE]
        others = [name for name in names if name not in {task for task, _ in HEADLINE}]
        rest = f"; the other tasks ({', '.join(others)}) are not in it" if others else ""
        return keys, f"unweighted mean of the built-in suite's three headline metrics (docs/eval.md){rest}"
    keys = [metric_key(task.name, task.metric_names[0]) for task in suite if task.metric_names]
    return keys, "unweighted mean of each task's first metric"


def headline_mean(metrics: dict[str, float], keys: Sequence[str] | None = None) -> float | None:
    """Mean of the headline metrics, or None when the row left out one of their tasks."""
    keys = [metric_key(task, metric) for task, metric in HEADLINE] if keys is None else list(keys)
    if not keys or not all(key in metrics for key in keys):
        return None
    return sum(metrics[key] for key in keys) / len(keys)


def suite_texts(suite: Sequence[Task]) -> list[str]:
    """Every task's texts once, in first-seen order."""
    return list(dict.fromkeys(text for task in suite for text in task.texts()))


@dataclasses.dataclass
class ModelRun:
    model: EvalModel
    load_s: float


def load_models(specs: Sequence[str], context: EncodeContext) -> list[ModelRun]:
    loader, runs = ModelLoader(context), []
    for spec in specs:
        started = time.perf_counter()
        model = loader.load(spec)
        runs.append(ModelRun(model, time.perf_counter() - started))
    return runs


def image_vectors(model: EvalModel, suite: Sequence[Task]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """({image set: {head: vectors}}, {task: why skipped}) for the tasks that embed images."""
    vectors, skipped = {}, {}
    for task in suite:
        for name, images in task.images().items():
            if task.name in skipped:
                break
            if name not in vectors:
                try:
                    vectors[name] = model.encode_images(images)
                except NotImplementedError as error:
                    skipped[task.name] = str(error)
                    break
    return vectors, skipped


def retrieval_only(suite: Sequence[Task], why: str) -> dict[str, str]:
    """{task: why skipped} for the tasks that are not retrieval (similarity, zero-shot)."""
    return {task.name: why for task in suite if not task.retrieval}


def row_skips(model: EvalModel, precision: str, suite: Sequence[Task], image_skips: dict[str, str]
              ) -> dict[str, str]:
    """Which tasks a row leaves out, and why: asymmetric and quantised rows score retrieval tasks only."""
    if model.asymmetric:
        return {**image_skips, **retrieval_only(suite, "asymmetric rows score retrieval tasks only")}
    if precision != quantized.FLOAT:
        return {**image_skips, **retrieval_only(suite, "quantised rows score retrieval tasks only (int8 is "
                                                       "calibrated on a task's documents)")}
    return image_skips


def head_encoders(model: EvalModel, context: EncodeContext) -> Callable[[str], Callable[[Sequence[str]], np.ndarray]]:
    """head → (texts → that head's unit vectors), for a task that names its texts only while it scores (an MTEB
    task): through the vector cache, each text list encoded once for all the model's heads."""
    encoded: dict[str, dict[str, np.ndarray]] = {}

    def encoder(head: str) -> Callable[[Sequence[str]], np.ndarray]:
        def encode(texts: Sequence[str]) -> np.ndarray:
            texts = list(texts)
            key = encoding.texts_fingerprint(texts)
            if key not in encoded:
                encoded[key] = encoding.encode(model, texts, context)
            return encoded[key][head]

        return encode

    return encoder


def score_model(run: ModelRun, suite: Sequence[Task], texts: list[str], index: dict[str, int],
                context: EncodeContext, precisions: Sequence[str] = ()) -> list[dict[str, Any]]:
    model = run.model
    timings: list[encoding.EncodeTiming] = []
    vectors = encoding.encode(model, texts, context, timings)
    images, image_skips = image_vectors(model, suite)
    encoder = head_encoders(model, context)
    rows = []
    for head, dim in model.heads.items():
        for precision in (quantized.FLOAT, *precisions):
            started = time.perf_counter()
            skipped = row_skips(model, precision, suite, image_skips)
            head_vectors = TextVectors(
                index, vectors[head], {name: encoding.unit_float32(by_head[head]) for name, by_head in images.items()},
                documents=vectors[encoding.documents_key(head)] if model.asymmetric else None, precision=precision,
                encoder=encoder(head))
            results: dict[str, TaskResult] = {task.name: task.score(head_vectors)
                                              for task in suite if task.name not in skipped}
            rows.append(result_row(run, head, dim, precision, results, skipped, timings[0],
                                   time.perf_counter() - started, headline_keys(suite)[0]))
    return rows


def result_row(run: ModelRun, head: str, dim: int, precision: str, results: dict[str, TaskResult],
               skipped: dict[str, str], timing: encoding.EncodeTiming, score_s: float,
               mean_keys: Sequence[str] | None = None) -> dict[str, Any]:
    model = run.model
    metrics = {metric_key(name, metric): value for name, result in results.items()
               for metric, value in result.metrics.items()}
    return {
        "model": model.spec, "kind": model.kind, "head": head, "dim": dim,
        "default_head": head == model.default_head,
        "precision": precision, "bytes_per_vector": quantized.bytes_per_vector(dim, precision),
        "metrics": metrics, "mean": headline_mean(metrics, mean_keys),
        "counts": {name: result.counts for name, result in results.items()},
        **({"mteb_results": natives} if (natives := {name: result.native for name, result in results.items()
                                                     if result.native is not None}) else {}),
        "skipped_tasks": skipped,
        "holdout": model.holdout.as_json(),
        "source": model.source,
        "timings": {"load_s": round(run.load_s, 3), "encode_s": round(timing.seconds, 3),
                    "texts": timing.texts, "from_cache": timing.cached,
                    # A derived model (concat, pca) only combines its parts' vectors: its rate means nothing; nor
                    # does the rate of no texts (a suite of mteb: tasks only, which encode while scoring).
                    "texts_per_s": (None if timing.cached or not model.cacheable or not timing.texts
                                    or not timing.seconds else round(timing.texts / timing.seconds, 1)),
                    "score_s": round(score_s, 3)},
    }


def evaluate(specs: Sequence[str], task_names: Sequence[str], context: EncodeContext,
             precisions: Sequence[str] = ()) -> dict[str, Any]:
    """The report as a JSON-able dict: tasks, headline definition, rows (every model × head × precision:
    float32, then each of `precisions`, embed_jax/eval/quantized.py)."""
    suite = task_registry.load_tasks(task_names)
    runs = load_models(specs, context)
    texts = suite_texts(suite)
    index = {text: position for position, text in enumerate(texts)}
    rows = [row for run in runs for row in score_model(run, suite, texts, index, context, precisions)]
    return {
        "tasks": {task.name: {"description": task.description, "metrics": list(task.metric_names),
                              "counts": next((row["counts"][task.name] for row in rows
                                              if task.name in row["counts"]), {})} for task in suite},
        "headline": dict(zip(("metrics", "definition"), headline_keys(suite))),
        "texts_encoded_per_model": len(texts),
        "rows": rows,
    }
