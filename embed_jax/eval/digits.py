"""Zero-shot digit classification and image→caption retrieval on the held-out digits (stage 4, docs/method.md §4); the
program is `python -m embed_jax.eval.zero_shot` (embed_jax/eval/zero_shot.py).

Nothing here was trained on the held-out images (embed_jax/data/digits.py: a fixed fifth by hash of the image id).

- zero_shot_accuracy: each image's vector against ten class vectors, a class vector being the mean of the unit
  vectors of the digit's captions over every template (CLIP's prompt ensembling), renormalised; chance is 10%.
- zero_shot_accuracy_unseen_templates: the same with only the templates no training caption used.
- zero_shot_accuracy_one_template: the first template, "{word} ({digit})", alone.
- caption_r1: image→caption retrieval among every distinct held-out caption (10 digits × 8 templates); a hit is a
  top caption that describes the image's digit (an image cannot tell which of its digit's wordings it was captioned
  with, so the templates of one digit count as one relevant set).

Every head is scored; `evaluate_digits` returns one head's figures (default: the first, FC1). `DigitsZeroShot` is the
same evaluation as a task of `python -m embed_jax.eval` (embed_jax/eval/tasks.py), for models with an image path.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from embed_jax.data import digits, images
from embed_jax.data.image_prompt import image_prompt_tokens
from embed_jax.eval.tasks import Task, TaskResult, TextVectors
from embed_jax.train import trained_student, workdir

IMAGE_SET = "digits_held_out"
# Captions are one short sentence ("a photo of the number seven"): 128 tokens hold any of them; the caption export
# encodes them in the same window (student_caption_vectors in embed_jax/teachers/caption_targets.py).
CAPTION_MAX_LENGTH = 128
METRICS = ("zero_shot_accuracy", "zero_shot_accuracy_unseen_templates", "zero_shot_accuracy_one_template",
           "caption_r1")


def held_out_images() -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 8, 8, 1) held-out digits and their labels."""
    indices = digits.split_indices("held_out")
    return digits.digit_images()[indices], digits.digit_labels()[indices]


def caption_texts() -> list[str]:
    """Every caption the evaluation embeds: all templates × all digits, label-major."""
    return [text for per_label in digits.class_captions(digits.TEMPLATES) for text in per_label]


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def class_vectors(caption_vectors: Mapping[str, np.ndarray], templates: Sequence[str]) -> np.ndarray:
    """(10, d): per digit, the renormalised mean of its captions' unit vectors over `templates`."""
    return _unit(np.stack([
        np.mean([_unit(caption_vectors[digits.caption(label, template)]) for template in templates], axis=0)
        for label in range(len(digits.NUMBER_WORDS))]))


def score_digits(image_vectors: np.ndarray, labels: np.ndarray, caption_vectors: Mapping[str, np.ndarray]
                 ) -> dict[str, float]:
    """The four figures (module docstring) from held-out image vectors and {caption: vector} for caption_texts()."""
    image_vectors = _unit(image_vectors)
    unseen = digits.TEMPLATES[digits.TRAIN_TEMPLATES:]

    def accuracy(templates):
        return float(np.mean(np.argmax(image_vectors @ class_vectors(caption_vectors, templates).T, 1) == labels))

    gallery = caption_texts()
    gallery_labels = np.repeat(np.arange(len(digits.NUMBER_WORDS)), len(digits.TEMPLATES))
    top = np.argmax(image_vectors @ _unit(np.stack([caption_vectors[text] for text in gallery])).T, axis=1)
    return {"zero_shot_accuracy": accuracy(digits.TEMPLATES),
            "zero_shot_accuracy_unseen_templates": accuracy(unseen),
            "zero_shot_accuracy_one_template": accuracy(digits.TEMPLATES[:1]),
            "caption_r1": float(np.mean(gallery_labels[top] == labels))}


def evaluate_digits_all_heads(student: Any, tokenizer: str) -> dict[int, dict[str, float]]:
    """{head dim: figures} for a Student with an image path (one device)."""
    if student.vision is None:
        raise ValueError("this student has no vision tower: zero-shot digits needs a stage-4 student")
    pictures, labels = held_out_images()
    pixels = images.preprocess_batch(list(pictures), trained_student.image_settings(student))
    prompt = image_prompt_tokens(tokenizer, student.num_image_tokens)
    if prompt.placeholders != dict(vars(student.placeholders)):
        raise ValueError(f"tokenizer {tokenizer!r} gives placeholder ids {prompt.placeholders}, the student was "
                         f"trained with {vars(student.placeholders)}: pass the tokenizer the student was trained with")
    image_vectors = trained_student.encode_images(student, prompt, pixels)
    texts = caption_texts()
    text_vectors = trained_student.encode_texts(student, tokenizer, texts, max_length=CAPTION_MAX_LENGTH).embeddings
    return {dim: score_digits(image_vectors[dim], labels, dict(zip(texts, text_vectors[dim])))
            for dim in student.heads.dims}


def evaluate_digits(student: Any, tokenizer: str, *, head: int | None = None) -> dict[str, float]:
    """One head's figures (default: the student's first head, FC1)."""
    results = evaluate_digits_all_heads(student, tokenizer)
    head = head if head is not None else student.heads.dims[0]
    if head not in results:
        raise ValueError(f"head {head} is not one of the student's heads {list(results)}")
    return results[head]


class DigitsZeroShot(Task):
    """The evaluation above as a task of embed_jax.eval: texts are the captions; images() gives the raw uint8
    held-out digits, which a model's `encode_images` preprocesses for its own tower (embed_jax/data/images.py)."""

    name = "digits_zero_shot"
    metric_names = METRICS
    description = "held-out scikit-learn digits: zero-shot classification (10 classes) and image→caption R@1"

    def texts(self) -> Sequence[str]:
        return caption_texts()

    def images(self) -> Mapping[str, Any]:
        return {IMAGE_SET: held_out_images()[0]}

    def score(self, vectors: TextVectors) -> TaskResult:
        texts = caption_texts()
        metrics = score_digits(vectors.images[IMAGE_SET], held_out_images()[1], dict(zip(texts, vectors.rows(texts))))
        return TaskResult(metrics=metrics, counts={"images": len(held_out_images()[1]), "captions": len(texts)})


def last_image_stage(run_dir: Path) -> Path:
    """The newest stage folder of the workdir `run_dir` whose student has a vision tower."""
    candidates = [path.parent for path in sorted(run_dir.glob(f"*/{workdir.STUDENT_CONFIG_FILE}"))
                  if json.loads(path.read_text()).get("vision")]
    if not candidates:
        raise FileNotFoundError(f"{run_dir} holds no stage with a vision tower; train one with "
                                "`python -m embed_jax.main --config=configs/vision.py --workdir=...`")
    return max(candidates, key=lambda path: path.stat().st_mtime)
