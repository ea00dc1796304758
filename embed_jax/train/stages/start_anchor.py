"""Two ways a heads-only cached stage keeps the student near the model it started from (docs/training.md, "Keeping
retrieval"):

    <stage>.start_interpolation = α     WiSE-FT: before pooling, the encoder becomes (1 − α)·θ_start + α·θ_trained
                                        (α = 1: the trained encoder, unchanged; α = 0: the start's); the stage's heads
                                        are then fitted on the interpolated encoder's cached pooled vectors
    <stage>.fc1_init = "start"          FC1 starts where the start is: a scaled identity onto the start teacher's block
                                        of the target, least squares of the pooled vectors onto the other blocks
                                        (instead of a random head)

θ_start is `<stage>.interpolation_start`'s encoder, or `model.init_from`'s (the folder every first stage builds from).
Both are pure functions of arrays here; stages/cached.py applies them to its student (only a cached stage has every
pooled vector at hand and a frozen encoder, so the heads it fits match the encoder they sit on). The keys' values are
StageConfig's to check (embed_jax/train/config.py); preflight asks `check_start` and `records_start_teacher` here.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

from embed_jax.assets import resolve_model_path
from embed_jax.models.heads import head_name
from embed_jax.models.param_paths import flat_variables
from embed_jax.train.config import StageConfig
from embed_jax.train.stages.student import build_student, flat_params

HEADS_PREFIX = "heads/"


def encoder_params(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every parameter but the heads' (the heads are refitted, and a start has none)."""
    return {name: value for name, value in params.items() if not name.startswith(HEADS_PREFIX)}


def check_same_encoder(start: Mapping[str, np.ndarray], trained: Mapping[str, np.ndarray], *, start_name: str,
                       key: str) -> None:
    """One line naming the first parameter that one encoder has and the other lacks, or whose shapes differ."""
    start, trained = encoder_params(start), encoder_params(trained)
    for name in sorted(set(start) | set(trained)):
        if name not in start or name not in trained:
            where = "the start" if name not in start else "the trained student"
            raise ValueError(f"config key {key}: {where} has no parameter {name!r}; the start {start_name} must be "
                             f"the trained encoder's architecture to interpolate with it")
        if start[name].shape != trained[name].shape:
            raise ValueError(f"config key {key}: parameter {name!r} is {tuple(start[name].shape)} in the start "
                             f"{start_name} but {tuple(trained[name].shape)} in the trained student; the start must "
                             f"have the trained encoder's shapes")


def interpolate(start: Mapping[str, np.ndarray], trained: Mapping[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
    """(1 − α)·start + α·trained for every encoder parameter (computed in float64, stored in the trained dtype)."""
    return {name: ((1 - alpha) * np.asarray(start[name], np.float64) + alpha * np.asarray(value, np.float64)
                   ).astype(np.asarray(value).dtype)
            for name, value in encoder_params(trained).items()}


def start_teacher(teacher_paths: Mapping[str, str], init_from: str, *, resolve, key: str) -> str:
    """The records' teacher that is the start itself (the same folder as model.init_from), by name."""
    start = resolve(init_from)
    for name, path in teacher_paths.items():
        if resolve(path) == start:
            return name
    raise ValueError(f"config key {key}='start' puts the start's own vectors into FC1, but no teacher of the records "
                     f"({', '.join(f'{name}: {path}' for name, path in teacher_paths.items())}) is model.init_from="
                     f"{init_from}; set {key}='' (a random FC1)")


def fc1_from_start(pooled: np.ndarray, target: np.ndarray, block: slice) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (hidden, teacher_dim), bias (teacher_dim,)) of FC1 from the rows a cached stage pooled:

    - on the start teacher's `block` of the target: c·I, the identity scaled by the least-squares c of c·x ≈ that
      block (the block is the start's own unit vector times the target's joint and weighting factors), bias 0 — so the
      start's own ranking is in FC1 from step 0, not approximated;
    - on every other column: the least-squares affine map of the pooled vectors x onto the target (normal equations in
      float64 on [x, 1]; a 1e-6 relative ridge keeps them solvable when two pooled dimensions are collinear).
    """
    x = np.asarray(pooled, np.float64)
    t = np.asarray(target, np.float64)
    hidden, teacher_dim = x.shape[1], t.shape[1]
    width = len(range(*block.indices(teacher_dim)))
    if width != hidden:
        raise ValueError(f"FC1 from the start needs the start teacher's block ({width}-d) to be the pooled vector's "
                         f"width ({hidden}-d): is the start really that teacher?")
    kernel = np.zeros((hidden, teacher_dim))
    bias = np.zeros(teacher_dim)
    kernel[:, block] = np.eye(hidden) * (np.sum(x * t[:, block]) / np.sum(x * x))
    rest = np.ones(teacher_dim, bool)
    rest[block] = False
    if rest.any():
        design = np.concatenate([x, np.ones((len(x), 1))], axis=1)
        normal = design.T @ design
        normal += 1e-6 * np.trace(normal) / len(normal) * np.eye(len(normal))
        solution = np.linalg.solve(normal, design.T @ t[:, rest])
        kernel[:, rest], bias[rest] = solution[:-1], solution[-1]
    return kernel.astype(np.float32), bias.astype(np.float32)


# ---------------------------------------------------------------------------------------------------- on a student


def start_folder(config, stage: StageConfig) -> str:
    """The start to interpolate with: <stage>.interpolation_start, else model.init_from."""
    return stage.interpolation_start or config.model.init_from


def set_params(module, values: Mapping[str, np.ndarray]) -> None:
    """Writes arrays into a module's (or State's) parameters by path name, keeping each one's sharding."""
    variables = flat_variables(module)
    for name, value in values.items():
        current = variables[name].get_value()
        sharding = getattr(current, "sharding", None)
        variables[name].set_value(jax.device_put(np.asarray(value, current.dtype), sharding) if sharding is not None
                                  else np.asarray(value, current.dtype))


def start_params(config, stage: StageConfig, *, seed: int) -> dict[str, np.ndarray]:
    """The start's parameters, built as this stage's student is but from the start folder."""
    start = config.copy_and_resolve_references()
    start.model.init_from = start_folder(config, stage)
    return flat_params(build_student(start, stage, seed=seed))


def check_start(config, stage: StageConfig, stage_name: str, *, seed: int = 0) -> None:
    """A start folder other than model.init_from must have the trained encoder's parameters and shapes."""
    if stage.start_interpolation == 1 or not stage.interpolation_start:
        return
    trained = flat_params(build_student(config, stage, seed=seed))
    check_same_encoder(start_params(config, stage, seed=seed), trained, start_name=start_folder(config, stage),
                       key=f"{stage_name}.interpolation_start")


def interpolate_student(config, stage: StageConfig, stage_name: str, student, *, seed: int, log) -> None:
    """WiSE-FT in place: the student's encoder (the previous stage's, loaded) moved back towards the start's."""
    alpha = float(stage.start_interpolation)
    if alpha == 1:
        return
    start = start_params(config, stage, seed=seed)
    trained = flat_params(student)
    check_same_encoder(start, trained, start_name=start_folder(config, stage), key=f"{stage_name}.interpolation_start")
    moved = max(float(np.max(np.abs(trained[name] - start[name]))) for name in encoder_params(trained))
    set_params(student, interpolate(start, trained, alpha))
    log(f"[{stage_name}] encoder = {1 - alpha:g}·start ({start_folder(config, stage)}) + {alpha:g}·trained "
        f"(largest |trained − start| {moved:.4g})")


def records_start_teacher(config, stage_name: str, manifest) -> str:
    """`start_teacher` of a records manifest (preflight asks it before any work, the stage again)."""
    return start_teacher({info.name: info.path for info in manifest.teachers}, config.model.init_from,
                         resolve=lambda path: resolve_model_path(path).resolve(), key=f"{stage_name}.fc1_init")


def init_fc1(config, stage_name: str, trainable, pooled: np.ndarray, target: np.ndarray, manifest, log) -> None:
    """FC1 (in the stage's trainable State) set by `fc1_from_start` from the cached rows."""
    teacher = records_start_teacher(config, stage_name, manifest)
    kernel, bias = fc1_from_start(pooled, target, manifest.teacher_slices[teacher])
    name = f"heads/dense/{head_name(config.model.teacher_dim)}"
    set_params(trainable, {f"{name}/kernel": kernel, f"{name}/bias": bias})
    log(f"[{stage_name}] FC1 starts at the start: identity onto teacher {teacher!r}'s block, least squares on the "
        f"rest ({len(pooled):,} cached rows)")
