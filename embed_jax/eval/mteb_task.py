"""An MTEB task on any model spec: `--tasks=mteb:TASKNAME` (the `mteb` extra: pip install -e '.[mteb]').

A thin adapter, not a reimplementation: mteb runs its own task (its data, its evaluator, its main score), and the
model is the row's head wrapped as an mteb encoder (`Encoder`, mteb's EncoderProtocol), whose `encode` hands the
texts mteb asks for to `TextVectors.encode`: the row's model through the per-model vector cache
(embed_jax/eval/encoding.py). No prompts, and cosine similarity of unit vectors, as every other task here
(docs/eval.md).

TASKNAME is a name of mteb's registry (`mteb.get_task`), or of a mock task mteb ships for offline tests
(`mteb.mocks.MOCK_TASK_REGISTRY`: MockSTSTask, MockRetrievalTask, ...: a few in-memory texts, no download). The
task's data loads when --tasks is read, so a task whose data cannot be had (mteb downloads it from the Hugging Face
hub) stops the run before any model loads. The row's metric is the task's main score (`metadata.main_score`), as mteb
aggregates it over the task's evaluation splits and subsets (`TaskResult.get_score`). Only text tasks run (the
encoder reads each batch's "text"); mteb's scoring is its own, so asymmetric and quantised rows leave these tasks out.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from embed_jax.eval.tasks import Task, TaskDataError, TaskResult, TextVectors, UnknownTaskError

PREFIX = "mteb:"
NAMES_COMMAND = 'python -c "import mteb; print(*sorted(t.metadata.name for t in mteb.get_tasks()))"'
REVISION = "no_revision_available"  # mteb's own name for a model without a Hub revision
MODEL_NAME = "embed_jax/eval"  # mteb's ModelMeta wants "organisation/name"; no result is cached under it


def import_mteb() -> Any:
    try:
        import mteb
    except ImportError:
        raise UnknownTaskError(f"{PREFIX}TASKNAME tasks need the mteb package: pip install -e '.[mteb]' "
                               "(docs/eval.md, \"MTEB tasks\")") from None
    return mteb


def resolve(name: str) -> Any:
    """mteb's task object of `name`: its registry first, then the mock tasks it ships."""
    mteb = import_mteb()
    try:
        return mteb.get_task(name)
    except KeyError:
        pass
    from mteb import mocks

    if name in mocks.MOCK_TASK_REGISTRY:
        return mocks.MOCK_TASK_REGISTRY[name]()
    examples = ", ".join(sorted(mocks.MOCK_TASK_REGISTRY)[:3])
    raise UnknownTaskError(f"unknown MTEB task {PREFIX}{name} (mteb {mteb.__version__}); list its task names with "
                           f"`{NAMES_COMMAND}`; the offline mock tasks are the keys of "
                           f"mteb.mocks.MOCK_TASK_REGISTRY, e.g. {examples}.")


class Encoder:
    """mteb's EncoderProtocol over `encode_texts` (texts → unit vectors): no prompts, cosine similarity."""

    def __init__(self, encode_texts: Callable[[Sequence[str]], np.ndarray]):
        from mteb.models import ModelMeta

        self.encode_texts = encode_texts
        self.mteb_model_meta = ModelMeta.create_empty({"name": MODEL_NAME, "revision": "local",
                                                       "similarity_fn_name": "cosine"})

    def encode(self, inputs: Any, *, task_metadata: Any, hf_split: str, hf_subset: str, prompt_type: Any = None,
               **kwargs: Any) -> np.ndarray:
        return self.encode_texts([text for batch in inputs for text in batch["text"]])

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        return np.asarray(embeddings1) @ np.asarray(embeddings2).T  # unit vectors: the cosine

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        return np.sum(np.asarray(embeddings1) * np.asarray(embeddings2), axis=1)


class MtebTask(Task):
    retrieval = False  # mteb scores with its own similarity: asymmetric and quantised rows leave it out

    def __init__(self, name: str):
        self.mteb = import_mteb()
        self.task = resolve(name)
        metadata = self.task.metadata
        if list(metadata.modalities) != ["text"]:
            raise TaskDataError(f"{PREFIX}{name}: an MTEB task of modalities {', '.join(metadata.modalities)}; "
                                "only text tasks run here")
        self.metric_names = (metadata.main_score,)
        self.description = (f"MTEB {metadata.name} ({metadata.type}, mteb {self.mteb.__version__}): its main score "
                            f"{metadata.main_score}, mteb's own evaluator")
        try:
            self.task.load_data()
        except (OSError, ValueError) as error:  # datasets / the hub client, e.g. ConnectionError offline
            first_line = str(error).splitlines()[0] if str(error) else ""
            raise TaskDataError(f"{PREFIX}{name}: mteb could not load the task's data ({type(error).__name__}: "
                                f"{first_line}); mteb downloads it from the Hugging Face hub, so run where the hub "
                                "(or its datasets cache) is reachable") from error

    def texts(self) -> Sequence[str]:
        return ()  # mteb names its texts while it scores: TextVectors.encode

    def score(self, vectors: TextVectors) -> TaskResult:
        result = self.mteb.evaluate(Encoder(vectors.encode), self.task, cache=None, co2_tracker=False,
                                    show_progress_bar=False, raise_error=True)
        task_result = result.task_results[0]
        return TaskResult(metrics={self.metric_names[0]: float(task_result.get_score())},
                          counts={"splits": len(task_result.scores),
                                  "subsets": sum(len(scores) for scores in task_result.scores.values())},
                          native=json.loads(task_result.model_dump_json()))  # JSON-able, as results.json holds it


def write_results(rows: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """`--mteb_results=DIR`: every row's mteb task results in mteb's own layout and format, one model folder per
    model × head (mteb's result cache: DIR/results/MODEL/REVISION/TASK.json, the TaskResult as mteb writes it with
    `to_disk`, and model_meta.json), so mteb's own tools read them: `mteb.cache.ResultCache(DIR).load_results()`."""
    mteb = import_mteb()
    written = []
    for row in rows:
        natives = row.get("mteb_results") or {}
        if not natives or row.get("precision", "float32") != "float32":
            continue
        name = model_folder_name(row)
        target = folder / "results" / name / REVISION
        target.mkdir(parents=True, exist_ok=True)
        meta = {"name": name.replace("__", "/", 1), "revision": REVISION, "similarity_fn_name": "cosine",
                "embed_dim": row.get("dim"), "framework": ["embed_jax"], "loader": None}
        (target / "model_meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        for native in natives.values():
            result = mteb.TaskResult.from_dict(native)
            path = target / f"{result.task_name}.json"
            result.to_disk(path)
            written.append(path)
    return written


def model_folder_name(row: dict[str, Any]) -> str:
    """mteb's model folder name, "org__name": "embed_jax__" + the spec's last part and the head."""
    spec = str(row.get("model", "model")).rstrip("/").split("/")[-1] or "model"
    head = str(row.get("head", ""))
    safe = re.sub(r"[^\w.-]+", "-", f"{spec}-{head}" if head not in ("", "default") else spec).strip("-")
    return f"embed_jax__{safe}"


def from_spec(argument: str) -> MtebTask:
    """`TASKNAME` (the part after mteb:)."""
    return MtebTask(argument)
