"""Self-distillation for dimension reduction from cached vectors (docs/method.md §4, "proposed"): a frozen embedding
model's own vectors → small linear heads, trained in seconds. The training half: the program and the folder it writes
are embed_jax/convert/shrink_cached.py and embed_jax/convert/shrink_folder.py (docs/shrink.md); the trainer is the cached
stage's (embed_jax/train/cached_heads.py: its step and `row_trainer`, the same batches of (seed, step)), with the heads
trained alone.

Why cached vectors are exact: with the encoder frozen, a reduction head only ever sees the model's pooled vector of
each text, and the teacher export already stored that vector (docs/method.md §2: the records' target is the
concatenation of each teacher's L2-normalised vector, renormalised; slicing one teacher's part and renormalising gives
its unit vector back, to float16 storage precision). So the heads train on (n, d) arrays instead of running the encoder
at every step (configs/shrink.py does that, and costs ~30 s per all-mpnet-base-v2 step on a 2-core CPU; docs/shrink.md).

The heads are the student's (embed_jax/models/heads.py: independent Linear + L2-normalise, one per dim), the loss
is `losses.distillation_loss` with every head a reduction head of the model's own vectors (similarity + relative
similarity, docs/method.md §4), the optimizer `optimizer.make_optimizer` (AdamW, warm-up + cosine, clipping). A seeded
slice of the records is held out; its loss is reported beside PCA's (fitted on the training slice) under the same loss.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from embed_jax import losses
from embed_jax.data.pipeline import RecordDataSource
from embed_jax.data.records import Manifest
from embed_jax.models.heads import EmbeddingHeads, head_dims, head_name
from embed_jax.train import cached_heads, optimizer as optimizer_lib

# Every head is a reduction head of the given vectors: similarity + relative
# similarity at docs/method.md §3.4's weights.
LOSS_CONFIG = losses.LossConfig(main_head=None, reduction_target="teacher")


class ShrinkError(ValueError):
    """Bad input to the cached-vector shrink; the message names the flag or file and what to do."""


# ---------------------------------------------------------------------------------------------------- the vectors


def teacher_info(manifest: Manifest, teacher: str, *, where: str):
    """The manifest's entry for `teacher`, or a ShrinkError listing the teachers the records hold."""
    for info in manifest.teachers:
        if info.name == teacher:
            return info
    raise ShrinkError(f"--teacher={teacher}: {where} holds no teacher of that name; its teachers are "
                      f"{', '.join(manifest.teacher_names)}")


def teacher_vectors(targets: np.ndarray, manifest: Manifest, teacher: str) -> np.ndarray:
    """(n, dim) float32 unit vectors of one teacher, cut from the (n, teacher_dim) concatenated targets: the part is
    the teacher's unit vector times one joint factor (targets.concatenated_target), so renormalising recovers it."""
    part = np.asarray(targets[:, manifest.teacher_slices[teacher]], dtype=np.float64)
    return (part / np.linalg.norm(part, axis=1, keepdims=True)).astype(np.float32)


def read_records(folder: str | os.PathLike, teacher: str) -> tuple[Manifest, list[str], np.ndarray]:
    """(manifest, record ids, the teacher's unit vectors) of every record in a records folder."""
    source = RecordDataSource(folder)
    teacher_info(source.manifest, teacher, where=f"--records={folder}")
    rows = source.read_many(range(len(source)))
    targets = np.stack([row["teacher"] for row in rows])
    return source.manifest, [row["id"] for row in rows], teacher_vectors(targets, source.manifest, teacher)


def split_holdout(num_records: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices): a seeded permutation's last `holdout` records are held out."""
    order = np.random.default_rng(seed).permutation(num_records)
    return np.sort(order[:num_records - holdout]), np.sort(order[num_records - holdout:])


def check_settings(dims: Sequence[int], *, model_dim: int, num_records: int, holdout: int, batch: int,
                   steps: int, learning_rate: float) -> tuple[int, ...]:
    """The dims as a tuple, after checking every setting against the records; errors name the flag."""
    try:
        dims = head_dims(None, list(dims))
    except ValueError as error:
        raise ShrinkError(f"--dims: {error}") from None
    too_wide = [dim for dim in dims if dim >= model_dim]
    if too_wide:
        raise ShrinkError(f"--dims: {too_wide} not below the model's {model_dim} dimensions: a reduction head "
                          "must be narrower than the vectors it reduces")
    # Relative similarity compares pairs of text pairs: a batch needs 3 texts at least (losses.py).
    if not 3 <= holdout <= num_records - 3:
        raise ShrinkError(f"--holdout={holdout}: must be between 3 and {num_records - 3} (the records hold "
                          f"{num_records})")
    if not 3 <= batch <= num_records - holdout:
        raise ShrinkError(f"--batch={batch}: must be between 3 and the {num_records - holdout} training records")
    if steps < 1:
        raise ShrinkError(f"--steps={steps}: must be a positive number of steps")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ShrinkError(f"--lr={learning_rate}: must be a finite number > 0")
    return dims


# ---------------------------------------------------------------------------------------------------- training


def new_heads(model_dim: int, dims: Sequence[int], seed: int) -> EmbeddingHeads:
    return EmbeddingHeads(model_dim, teacher_dim=None, reduction_dims=dims, rngs=nnx.Rngs(seed))


def pca_heads(vectors: np.ndarray, dims: Sequence[int]) -> EmbeddingHeads:
    """Heads holding PCA of `vectors` (centred, top-dim directions): (v − mean)·Cᵀ is a Linear with bias −mean·Cᵀ.
    The baseline, scored by the same loss."""
    mean = vectors.astype(np.float64).mean(axis=0)
    _, _, components = np.linalg.svd(vectors - mean, full_matrices=False)
    heads = new_heads(vectors.shape[1], dims, seed=0)
    for dim in dims:
        dense = heads.dense[head_name(dim)]
        dense.kernel[...] = jnp.asarray(components[:dim].T, jnp.float32)
        dense.bias[...] = jnp.asarray(-mean @ components[:dim].T, jnp.float32)
    return heads


def split_heads(heads: EmbeddingHeads) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, parameters, the rest: nothing) as the cached step takes a module."""
    return nnx.split(heads, nnx.Param, ...)


def one_device_sharding() -> jax.sharding.NamedSharding:
    """Everything on one device: the heads and a batch are kilobytes."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    return cached_heads.replicated_sharding(mesh)


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation) -> Callable:
    """jit(params, rest, opt_state, all_vectors, all_vectors, batch_indices) → (params, opt_state, metrics): the
    cached stage's step (cached_heads.make_steps) on one device, each batch of the model's vectors its own target."""
    one_device = one_device_sharding()
    train_step, _ = cached_heads.make_steps(
        graphdef=graphdef, optimizer=optimizer, loss_config=LOSS_CONFIG, trainable_sharding=one_device,
        frozen_sharding=one_device, opt_state_sharding=one_device, batch_sharding=one_device, replicated=one_device,
        heads_of=cached_heads.heads_itself)
    return train_step


@functools.partial(jax.jit, static_argnames=("graphdef",))
def evaluate_batch(params: nnx.State, rest: nnx.State, vectors: jax.Array, *, graphdef: nnx.GraphDef):
    """The weighted total and each term of one batch of the model's vectors through every head (compiled once per
    heads structure, however often the held-out loss is reported)."""
    return cached_heads.heads_loss(params, rest, vectors, vectors, graphdef=graphdef, loss_config=LOSS_CONFIG,
                                   heads_of=cached_heads.heads_itself)


def heldout_batches(vectors: np.ndarray, batch: int) -> list[np.ndarray]:
    """Consecutive held-out chunks of the training batch size (the in-batch losses depend on it); a remainder is
    dropped unless it is the only chunk."""
    count = max(1, len(vectors) // batch)
    size = min(batch, len(vectors))
    return [vectors[index * size:(index + 1) * size] for index in range(count)]


def heldout_loss(heads: EmbeddingHeads, batches: Sequence[np.ndarray]) -> dict[str, float]:
    """{'loss': mean weighted total, 'dense_{dim}/…': mean of each term} over the held-out batches."""
    graphdef, params, rest = split_heads(heads)
    results = [evaluate_batch(params, rest, jnp.asarray(chunk), graphdef=graphdef) for chunk in batches]
    mean = lambda values: float(np.mean([float(value) for value in values]))  # noqa: E731
    return {"loss": mean(loss for loss, _ in results),
            **{name: mean(terms[name] for _, terms in results) for name in results[0][1]}}


@dataclasses.dataclass(frozen=True)
class TrainResult:
    heads: EmbeddingHeads
    history: list[dict[str, float]]  # {"step", "train_loss" (mean since the last row), "heldout_loss", "seconds"}
    seconds: float


def train_heads(vectors: np.ndarray, train_indices: np.ndarray, heldout: Sequence[np.ndarray], *,
                dims: Sequence[int], steps: int, batch: int, learning_rate: float, seed: int, log_every: int,
                log: Callable[[str], None] = print) -> TrainResult:
    """Trains the heads for `steps` shuffled batches of the training records; logs the held-out loss as it goes."""
    heads = new_heads(vectors.shape[1], dims, seed)
    graphdef, params, rest = split_heads(heads)
    optimizer, _ = optimizer_lib.make_optimizer(None, learning_rate=learning_rate, total_steps=steps)
    opt_state = optimizer.init(params)
    device_vectors = jnp.asarray(vectors)
    advance = cached_heads.row_trainer(make_train_step(graphdef, optimizer), rest, device_vectors, device_vectors,
                                       train_indices, batch_size=batch, seed=seed, replicated=one_device_sharding())
    history = [{"step": 0, "train_loss": None, "heldout_loss": heldout_loss(heads, heldout)["loss"],
                "seconds": 0.0}]
    log(f"[shrink] step 0/{steps}: held-out loss {history[0]['heldout_loss']:.5f}")
    start, recent = time.perf_counter(), []
    for step in range(1, steps + 1):
        (params, opt_state), step_metrics = advance((params, opt_state), step - 1)
        recent.append(step_metrics["loss"])
        if step % log_every == 0 or step == steps:
            nnx.update(heads, params)
            row = {"step": step, "train_loss": float(np.mean(jax.device_get(recent))),
                   "heldout_loss": heldout_loss(heads, heldout)["loss"], "seconds": time.perf_counter() - start}
            history.append(row)
            recent = []
            log(f"[shrink] step {step}/{steps}: train loss {row['train_loss']:.5f} · held-out loss "
                f"{row['heldout_loss']:.5f} · {row['seconds']:.1f} s")
    nnx.update(heads, params)
    return TrainResult(heads=heads, history=history, seconds=time.perf_counter() - start)


@dataclasses.dataclass(frozen=True)
class ShrinkRun:
    result: TrainResult
    heldout: dict[str, Any]  # held-out losses: "trained", "pca" (of the training records), "initial" (untrained)
    settings: dict[str, Any]  # what embed_jax_export.json records of the training


def shrink_heads(vectors: np.ndarray, train_indices: np.ndarray, heldout_indices: np.ndarray, *,
                 dims: Sequence[int], steps: int, batch: int, learning_rate: float, seed: int, log_every: int,
                 log: Callable[[str], None] = print) -> ShrinkRun:
    """Trains the heads on the training records and scores them, PCA and the untrained heads on the held-out ones."""
    heldout = heldout_batches(vectors[heldout_indices], batch)
    result = train_heads(vectors, train_indices, heldout, dims=dims, steps=steps, batch=batch,
                         learning_rate=learning_rate, seed=seed, log_every=log_every, log=log)
    scores = {"trained": heldout_loss(result.heads, heldout),
              "pca": heldout_loss(pca_heads(vectors[train_indices], dims), heldout),
              "initial": result.history[0]["heldout_loss"]}
    log(f"[shrink] held-out loss: trained {scores['trained']['loss']:.5f}, PCA of the training records "
        f"{scores['pca']['loss']:.5f}, untrained {scores['initial']:.5f}; {result.seconds:.1f} s of training")
    settings = {"steps": steps, "batch": batch, "learning_rate": learning_rate, "seed": seed,
                "train_records": len(train_indices), "heldout_records": len(heldout_indices),
                "loss": dataclasses.asdict(LOSS_CONFIG)}
    return ShrinkRun(result=result, heldout=scores, settings=settings)
