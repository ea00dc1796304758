"""What an evaluation task is, and the registry that names them.

A task lists the texts it embeds (`texts()`), then scores one head's vectors of them (`score(vectors)`): the runner
embeds the union of every task's texts once per model, and hands each task a `TextVectors` lookup per head. A
task's data loads lazily and once (the hold-out is read on first use).

The registry maps a task name to "module:factory", imported on first use, so a task that needs other packages (the
vision zero-shot task in embed_jax/eval/digits.py) costs nothing until asked for. To add a task: write a `Task`
subclass in its own module and add one line to TASKS (or call `register_task` from a script). A name with a prefix
of TASK_PREFIXES (`beir:FOLDER[:SPLIT]`, `pairs:FILE`) is the user's own data: the factory gets the rest of the name,
and reads its files at once (a malformed file stops the run before any model loads); `mteb:TASKNAME` runs an MTEB
task (embed_jax/eval/mteb_task.py), whose texts are known only while mteb scores it: it encodes them through
`TextVectors.encode`. A task that scores images as well lists them in `images()` (name → array of pixel batches);
the runner then calls the model's `encode_images` and passes the image vectors under `vectors.images[name]`; models
without an image path skip it.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from embed_jax.eval import quantized

# name → "module:factory" (or the factory itself); DEFAULT_TASKS is the headline text suite (docs/eval.md).
TASKS: dict[str, str | Callable[[], "Task"]] = {
    "lee_similarity": "embed_jax.eval.lee:LeeSimilarity",
    "lee_retrieval": "embed_jax.eval.lee:LeeRetrieval",
    "wordnet_retrieval": "embed_jax.eval.wordnet:WordNetRetrieval",
    # The validation split (training-side synsets) for choosing recipe knobs; never in the default suite.
    "wordnet_validation": "embed_jax.eval.wordnet:WordNetValidation",
}
DEFAULT_TASKS = ("lee_similarity", "lee_retrieval", "wordnet_retrieval")
# prefix → "module:factory" taking the rest of the name: the user's own data (docs/eval.md), e.g. beir:FOLDER:test.
TASK_PREFIXES: dict[str, str] = {
    "beir": "embed_jax.eval.beir:from_spec",
    "pairs": "embed_jax.eval.pairs:from_spec",
    "mteb": "embed_jax.eval.mteb_task:from_spec",
}
PREFIX_FORMS = "beir:FOLDER[:SPLIT], pairs:FILE, mteb:TASKNAME"


class UnknownTaskError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0])


class TaskDataError(ValueError):
    """A task's data file is missing or malformed; the message names the file and the line."""


@dataclasses.dataclass
class TextVectors:
    """One head's unit vectors of the suite's texts, looked up by text (`rows(texts)` → (n, dim) float32).

    A retrieval task asks `retrieval(query_texts, document_texts)` for its two sides: the documents come from
    `documents` when another model encoded them (an asymmetric row, embed_jax/eval/derived.py), and both sides are
    quantised to `precision` (embed_jax/eval/quantized.py); `queries @ documents.T` is then the score to rank by.
    """

    index: Mapping[str, int]
    matrix: np.ndarray
    images: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    documents: np.ndarray | None = None  # the document side's vectors of the same texts; None: `matrix`
    precision: str = quantized.FLOAT
    # This head's unit vectors of any texts, for a task that learns its texts only while scoring (mteb_task.py).
    encoder: Callable[[Sequence[str]], np.ndarray] | None = None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self.encoder is None:
            raise ValueError("these vectors carry no encoder: only the suite's texts can be looked up (rows)")
        return self.encoder(texts)

    def rows(self, texts: Sequence[str]) -> np.ndarray:
        return self.matrix[[self.index[text] for text in texts]]

    def document_rows(self, texts: Sequence[str]) -> np.ndarray:
        matrix = self.matrix if self.documents is None else self.documents
        return matrix[[self.index[text] for text in texts]]

    def retrieval(self, query_texts: Sequence[str], document_texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(queries, documents), float64, whose product is each query's score of each document."""
        return quantized.retrieval_vectors(self.rows(query_texts), self.document_rows(document_texts),
                                           self.precision)


@dataclasses.dataclass(frozen=True)
class TaskResult:
    metrics: dict[str, float]  # metric name → value (higher is better)
    counts: dict[str, int]  # what the metrics were computed over (pairs, queries, corpus size, ...)
    native: dict | None = None  # the task's result in its own library's format (mteb's TaskResult as a dict)


class Task:
    """Base class: `name`, `metric_names` (reported in this order), `texts()`, `score(vectors)`.

    A retrieval task (`retrieval = True`) ranks documents for queries through `vectors.retrieval`; only those score
    the asymmetric and quantised rows (the others show "—")."""

    name: str = ""
    metric_names: tuple[str, ...] = ()
    description: str = ""
    retrieval: bool = False

    def texts(self) -> Sequence[str]:
        raise NotImplementedError

    def images(self) -> Mapping[str, Any]:
        """Named image sets this task needs embedded (none for text tasks)."""
        return {}

    def score(self, vectors: TextVectors) -> TaskResult:
        raise NotImplementedError


def register_task(name: str, target: str | Callable[[], Task]) -> None:
    """Add a task as "module:factory" or as the factory (no arguments, returns a Task)."""
    if isinstance(target, str) and ":" not in target:
        raise ValueError(f"task {name!r}: target {target!r} must be 'module:factory'")
    TASKS[name] = target


def _import(target: str) -> Callable:
    module_name, factory_name = target.split(":")
    return getattr(importlib.import_module(module_name), factory_name)


def is_known(name: str) -> bool:
    return name in TASKS or name.partition(":")[0] in TASK_PREFIXES and bool(name.partition(":")[2])


def load_task(name: str) -> Task:
    prefix, _, argument = name.partition(":")
    if name not in TASKS and prefix in TASK_PREFIXES and argument:
        task = _import(TASK_PREFIXES[prefix])(argument)
        task.name = name
        return task
    if name not in TASKS:
        raise UnknownTaskError(f"unknown evaluation task {name!r}; the tasks are: {', '.join(sorted(TASKS))}, "
                               f"or {PREFIX_FORMS}.")
    target = TASKS[name]
    if isinstance(target, str):
        target = _import(target)
    task = target()
    task.name = name
    return task


def load_tasks(names: Sequence[str]) -> list[Task]:
    unknown = [name for name in names if not is_known(name)]
    if unknown:
        raise UnknownTaskError(f"unknown evaluation task(s) {', '.join(map(repr, unknown))}; the tasks are: "
                               f"{', '.join(sorted(TASKS))}, or {PREFIX_FORMS}.")
    return [load_task(name) for name in names]
