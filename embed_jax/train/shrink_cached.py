r"""Self-distillation for dimension reduction from cached vectors (SPEC §4, "proposed"): a frozen embedding model's
own vectors → small linear heads, trained in seconds.

    python -m embed_jax.train.shrink_cached --records=runs/default/records --teacher=mpnet --dims=128,64 \
        --out=runs/shrink/mpnet

Why cached vectors are exact: with the encoder frozen, a reduction head only ever sees the model's pooled vector of
each text, and the teacher export already stored that vector (SPEC §2: the records' target is the concatenation of
each teacher's L2-normalised vector, renormalised; slicing one teacher's part and renormalising gives its unit
vector back, to float16 storage precision). So the heads train on (n, d) arrays instead of running the encoder at
every step (configs/shrink.py does that, and costs ~30 s per all-mpnet-base-v2 step on a 2-core CPU; docs/shrink.md).

The heads are the student's (embed_jax/models/heads.py: independent Linear + L2-normalise, one per dim), the loss
is `losses.distillation_loss` with every head a reduction head of the model's own vectors (similarity + relative
similarity, SPEC §4), the optimizer `optimizer.make_optimizer` (AdamW, warm-up + cosine, clipping). A seeded slice
of the records is held out; its loss is reported beside PCA's (fitted on the training slice) under the same loss.

Output: the source model's folder copied unchanged, plus one `2_Dense_{dim}` folder per head (stella's layout,
written by embed_jax.convert.hf_export.write_heads), routed after the model's normalised vector:
Transformer → Pooling → Normalize → 2_Dense_{first dim} → Normalize; and `embed_jax_export.json` (the issue-5
contract; "student_config" is null: the folder is the source model plus heads, not an embed_jax Student).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from embed_jax import losses
from embed_jax.convert import hf_export
from embed_jax.data.pipeline import RecordDataSource
from embed_jax.data.records import Manifest
from embed_jax.models.heads import EmbeddingHeads, head_dims, head_name
from embed_jax.train import optimizer as optimizer_lib

# Every head is a reduction head of the given vectors: similarity + relative similarity at SPEC §3.4's weights.
LOSS_CONFIG = losses.LossConfig(main_head=None, reduction_target="teacher")
STAGE_NAME = "shrink_cached"


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


def batch_loss(params: nnx.State, vectors: jax.Array, *, graphdef: nnx.GraphDef) -> tuple[jax.Array, dict]:
    """The weighted total and each term of one batch of the model's vectors through every head."""
    heads = nnx.merge(graphdef, params)
    outputs = {head_name(dim): output for dim, output in heads(vectors).items()}
    return losses.distillation_loss(outputs, vectors, LOSS_CONFIG)


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation) -> Callable:
    """jit(params, opt_state, all_vectors, batch_indices) → (params, opt_state, loss). The vectors stay on the
    device; a step gathers its batch. No shardings: the heads and a batch are kilobytes (one device suffices)."""

    def step(params, opt_state, all_vectors, indices):
        grad_fn = jax.value_and_grad(functools.partial(batch_loss, graphdef=graphdef), has_aux=True)
        (loss, _), grads = grad_fn(params, all_vectors[indices])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def heldout_batches(vectors: np.ndarray, batch: int) -> list[np.ndarray]:
    """Consecutive held-out chunks of the training batch size (the in-batch losses depend on it); a remainder is
    dropped unless it is the only chunk."""
    count = max(1, len(vectors) // batch)
    size = min(batch, len(vectors))
    return [vectors[index * size:(index + 1) * size] for index in range(count)]


# Compiled once per heads structure (the graphdef is static), however often the held-out loss is reported.
evaluate_batch = jax.jit(batch_loss, static_argnames=("graphdef",))


def heldout_loss(heads: EmbeddingHeads, batches: Sequence[np.ndarray]) -> dict[str, float]:
    """{'loss': mean weighted total, 'dense_{dim}/…': mean of each term} over the held-out batches."""
    graphdef, params = nnx.split(heads)
    results = [evaluate_batch(params, jnp.asarray(chunk), graphdef=graphdef) for chunk in batches]
    mean = lambda values: float(np.mean([float(value) for value in values]))  # noqa: E731
    return {"loss": mean(loss for loss, _ in results),
            **{name: mean(terms[name] for _, terms in results) for name in results[0][1]}}


def epoch_batches(train_indices: np.ndarray, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of shuffled global batches (the remainder is dropped: every batch has the same size)."""
    order = rng.permutation(train_indices)
    return [order[start:start + batch] for start in range(0, len(order) - batch + 1, batch)]


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
    graphdef, params = nnx.split(heads)
    optimizer, _ = optimizer_lib.make_optimizer(None, learning_rate=learning_rate, total_steps=steps, params=params)
    opt_state = optimizer.init(params)
    train_step = make_train_step(graphdef, optimizer)
    device_vectors = jnp.asarray(vectors)
    rng = np.random.default_rng(seed)
    history = [{"step": 0, "train_loss": None, "heldout_loss": heldout_loss(heads, heldout)["loss"],
                "seconds": 0.0}]
    log(f"[shrink] step 0/{steps}: held-out loss {history[0]['heldout_loss']:.5f}")
    start, pending, recent = time.perf_counter(), [], []
    for step in range(1, steps + 1):
        if not pending:
            pending = epoch_batches(train_indices, batch, rng)
        params, opt_state, loss = train_step(params, opt_state, device_vectors, jnp.asarray(pending.pop(0)))
        recent.append(loss)
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


# ---------------------------------------------------------------------------------------------------- the folder


def source_folder(manifest: Manifest, teacher: str, *, where: str) -> Path:
    """The teacher's sentence-transformers folder, checked to be the one that made the records' vectors."""
    from embed_jax.teachers import encoders  # torch: only for writing the folder, never on the training path
    from embed_jax.assets import resolve_model_path

    info = teacher_info(manifest, teacher, where=where)
    folder = resolve_model_path(info.path)
    if info.pooling != "auto" or info.prompt or not (folder / "modules.json").is_file():
        raise ShrinkError(
            f"--teacher={teacher}: its records vectors come from {info.path} with pooling {info.pooling!r} and prompt "
            f"{info.prompt!r}; the output copies a sentence-transformers folder (modules.json) that computes them "
            "itself, so the teacher must have been exported with pooling 'auto' and no prompt")
    if encoders.folder_fingerprint(folder) != info.weights_sha256:
        raise ShrinkError(f"--teacher={teacher}: {folder} is not the folder the records were made with (its files' "
                          f"sha256 differs from the manifest's weights_sha256 in {where}); the heads would not fit "
                          "its vectors. Re-export the records with this folder.")
    return folder


def module_entry(index: int, path: str, kind: str) -> dict[str, Any]:
    return {"idx": index, "name": str(index), "path": path, "type": f"sentence_transformers.models.{kind}"}


def shrunk_modules(source_modules: list[dict[str, Any]], default_dim: int) -> list[dict[str, Any]]:
    """The source's modules, a Normalize unless they end with one (the heads learned unit vectors), the default
    head, and the heads' output Normalize."""
    modules = [dict(module) for module in source_modules]
    if not modules[-1]["type"].endswith("Normalize"):
        modules.append(module_entry(len(modules), f"{len(modules)}_Normalize", "Normalize"))
    modules.append(module_entry(len(modules), hf_export.dense_folder(default_dim), "Dense"))
    modules.append(module_entry(len(modules), hf_export.NORMALIZE_FOLDER, "Normalize"))
    return modules


def model_card(source: str, dims: Sequence[int], dense_index: int) -> str:
    heads = ", ".join(f"`{hf_export.dense_folder(dim)}`" for dim in dims)
    return (f"# {source} shrunk to {'/'.join(map(str, dims))} dimensions\n\n"
            f"The unchanged {source} (its card: `SOURCE_README.md`) followed by linear heads {heads} trained by "
            f"embed_jax's self-distillation from its own vectors (`python -m embed_jax.train.shrink_cached`, "
            f"docs/shrink.md). Default head: {dims[0]}. Another head: replace the Dense module "
            f"(`model[{dense_index}] = Dense.load(folder + '/{hf_export.dense_folder(dims[-1])}')`) or edit its "
            "path in modules.json.\n\nTraining: see `embed_jax_export.json` (records, steps, held-out losses).\n")


def write_folder(out: Path, source: Path, heads: EmbeddingHeads, record: dict[str, Any]) -> None:
    """Copies `source`, adds the heads and the routing, written aside and moved in at the end."""
    dims = tuple(heads.reduction_dims)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.shrink-", dir=out.parent)) / out.name
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(".*"))
        params = {f"heads.{name}": value for name, value in hf_export.flat_params(heads).items()}
        hf_export.write_heads(staging, hf_export.head_tensors(params, dims))
        modules = shrunk_modules(json.loads((source / "modules.json").read_text()), dims[0])
        (staging / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
        if (staging / "README.md").is_file():
            (staging / "README.md").rename(staging / "SOURCE_README.md")
        dense_index = len(modules) - 2
        (staging / "README.md").write_text(model_card(record["source"]["model"], dims, dense_index))
        files = sorted(str(path.relative_to(staging)) for path in staging.rglob("*") if path.is_file())
        record = {**record, "files": files + [hf_export.EXPORT_FILE]}
        (staging / hf_export.EXPORT_FILE).write_text(json.dumps(record, indent=1) + "\n")
        if out.exists():  # refused before training; checked again in case it appeared meanwhile
            raise FileExistsError(f"--out={out} appeared while training; nothing was written. Choose a new --out")
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)


def export_record(*, manifest: Manifest, records_dir: Path, teacher: str, folder: Path, dims: Sequence[int],
                  steps: int, settings: dict[str, Any], result: TrainResult, heldout: dict[str, Any]) -> dict:
    """embed_jax_export.json: the issue-5 contract (evaluation reads training_records) plus how it was trained."""
    info = teacher_info(manifest, teacher, where=str(records_dir))
    return {
        "format_version": 1,
        "student_config": None,  # not an embed_jax Student: the source model unchanged, heads on its unit vector
        "heads": list(dims),
        "default_head": dims[0],
        "source": {"workdir": None, "stage": STAGE_NAME, "step": steps, "model": info.path, "folder": str(folder)},
        "training_records": [{"records_dir": str(records_dir), "num_records": manifest.num_records,
                              "corpus_fingerprint": manifest.corpus_fingerprint}],
        "vision": None,
        "shrink": {"teacher": teacher, "teacher_window": info.max_seq_length, **settings,
                   "train_seconds": round(result.seconds, 2), "heldout": heldout, "history": result.history},
    }


# ---------------------------------------------------------------------------------------------------- command


def shrink(records: str, teacher: str, dims: Sequence[int], out: str, *, steps: int = 2000, batch: int = 128,
           learning_rate: float = 1e-3, holdout: int = 512, seed: int = 0, log_every: int = 100,
           log: Callable[[str], None] = print) -> tuple[EmbeddingHeads, dict[str, Any]]:
    """The whole run (module docstring); returns the trained heads and the embed_jax_export.json it wrote."""
    records_dir, out_path = Path(records).expanduser().resolve(), Path(out).expanduser().resolve()
    if out_path.exists():
        raise ShrinkError(f"--out={out_path} exists; nothing was written. Choose a new folder (this never "
                          "overwrites a model folder)")
    manifest, _, vectors = read_records(records_dir, teacher)
    dims = check_settings(dims, model_dim=vectors.shape[1], num_records=len(vectors), holdout=holdout, batch=batch,
                          steps=steps, learning_rate=learning_rate)
    folder = source_folder(manifest, teacher, where=str(records_dir / "manifest.json"))
    train_indices, heldout_indices = split_holdout(len(vectors), holdout, seed)
    log(f"[shrink] {teacher} ({vectors.shape[1]}-d) from {records_dir}: {len(train_indices)} training and "
        f"{len(heldout_indices)} held-out records → heads {', '.join(map(str, dims))}")
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
    record = export_record(manifest=manifest, records_dir=records_dir, teacher=teacher, folder=folder, dims=dims,
                           steps=steps, settings=settings, result=result, heldout=scores)
    write_folder(out_path, folder, result.heads, record)
    log(f"[shrink] wrote {out_path}: SentenceTransformer({str(out_path)!r}) gives {dims[0]}-d vectors")
    return result.heads, record


_RECORDS = flags.DEFINE_string("records", None, "Teacher records folder (python -m embed_jax.teachers.export).")
_TEACHER = flags.DEFINE_string("teacher", None, "The teacher (name in the records' manifest) to shrink.")
_DIMS = flags.DEFINE_list("dims", None, "Head dimensions, e.g. 128,64 (the first is the folder's default).")
_OUT = flags.DEFINE_string("out", None, "New folder for the sentence-transformers model (never overwritten).")
_STEPS = flags.DEFINE_integer("steps", 2000, "Optimizer steps.")
_BATCH = flags.DEFINE_integer("batch", 128, "Global batch size (the in-batch losses compare its pairs).")
_LR = flags.DEFINE_float("lr", 1e-3, "Peak learning rate (warm-up 5%, cosine to 0).")
_HOLDOUT = flags.DEFINE_integer("holdout", 512, "Records held out to report the loss on.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the hold-out split, the heads' init and the batch order.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 100, "Steps between progress lines.")


def parse_dims(values: Sequence[str]) -> list[int]:
    try:
        return [int(value) for value in values]
    except ValueError:
        raise ShrinkError(f"--dims={','.join(values)}: give comma-separated positive integers, e.g. 128,64") from None


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    missing = [name for name, flag in (("records", _RECORDS), ("teacher", _TEACHER), ("dims", _DIMS), ("out", _OUT))
               if not flag.value]
    if missing:
        raise app.UsageError(f"required: {', '.join('--' + name for name in missing)}")
    try:
        shrink(_RECORDS.value, _TEACHER.value, parse_dims(_DIMS.value), _OUT.value, steps=_STEPS.value,
               batch=_BATCH.value, learning_rate=_LR.value, holdout=_HOLDOUT.value, seed=_SEED.value,
               log_every=_LOG_EVERY.value)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
