"""Per-teacher weights of the distillation target, applied to the records' vectors as they are read.

A record holds t = concat(u_1, ..., u_N) / √N (u_i teacher i's unit vector, docs/method.md §2), so the cosine of
two targets is the mean of the teachers' cosines. Multiplying block i by √(N·w_i), with the weights normalised to
Σw = 1, gives concat(√w_1 u_1, ..., √w_N u_N): still a unit vector, whose cosine between two texts is Σ w_i cos_i.
The weights thus change the target without re-exporting the records (docs/training.md, "Teacher weights").

Equal weights are the paper's target: no scale at all (`block_scales` returns None), so batches stay bit-identical.

    parse_weights    "minilm=0.25,mpnet=0.75" → {name: weight} (the config key data.teacher_weights)
    normalised       weights checked (finite, ≥ 0, sum > 0) and divided by their sum
    weights_for_teachers  a config value checked against the records' teachers, in their order
    block_scales     per-dimension factors √(N·w_i) for the records' layout, or None for equal weights
    identity_weights the normalised weights a run's identity records (None for equal ones)
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONFIG_KEY = "data.teacher_weights"
EXAMPLE = "--config.data.teacher_weights=minilm=0.25,mpnet=0.75"


class TeacherWeightsError(ValueError):
    """Teacher weights that cannot weigh these teachers; the message names the key (or spec) and the teachers."""


def parse_weights(text: str, *, key: str = CONFIG_KEY) -> dict[str, float]:
    """{teacher name: weight} from "name=weight,name=weight"; {} for "" (equal weights)."""
    weights: dict[str, float] = {}
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        name, separator, value = (side.strip() for side in item.partition("="))
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not separator or not name or weight is None:
            raise TeacherWeightsError(f"config key {key}={text!r}: {item!r} is not NAME=WEIGHT; write the records' "
                                      f"teacher names with a number each, e.g. {EXAMPLE}")
        if name in weights:
            raise TeacherWeightsError(f"config key {key}={text!r}: teacher {name!r} is listed twice.")
        weights[name] = weight
    return weights


def normalised(weights: Sequence[float], names: Sequence[str], *, where: str) -> tuple[float, ...]:
    """`weights` (one per name of `names`) divided by their sum, after checking each is finite and ≥ 0 and that
    they do not sum to 0. `where` opens the error (the config key or the model spec)."""
    shown = ", ".join(f"{name}={weight:g}" for name, weight in zip(names, weights))
    bad = [name for name, weight in zip(names, weights) if not math.isfinite(weight) or weight < 0]
    if bad:
        raise TeacherWeightsError(f"{where}: every teacher weight must be a finite number ≥ 0 (got {shown}); "
                                  f"{', '.join(bad)} is not.")
    total = math.fsum(weights)
    if total <= 0:
        raise TeacherWeightsError(f"{where}: the teacher weights sum to 0 (got {shown}); give at least one teacher "
                                  f"a positive weight.")
    return tuple(weight / total for weight in weights)


def weights_for_teachers(text: str, teacher_names: Sequence[str], *, records_dir: str,
                         key: str = CONFIG_KEY) -> tuple[float, ...] | None:
    """The normalised weights of `text` (the config value) in the records' teacher order, or None when it is ""."""
    weights = parse_weights(text, key=key)
    if not weights:
        return None
    if set(weights) != set(teacher_names):
        missing = [name for name in teacher_names if name not in weights]
        unknown = [name for name in weights if name not in teacher_names]
        problems = ([f"no weight for {', '.join(missing)}"] if missing else []) + (
            [f"no teacher named {', '.join(unknown)}"] if unknown else [])
        raise TeacherWeightsError(
            f"config key {key}={text!r}: the records in {records_dir} hold the teachers {', '.join(teacher_names)} "
            f"({'; '.join(problems)}); give one weight per teacher, by those names, e.g. "
            f"--config.{key}={','.join(f'{name}=1' for name in teacher_names)}, or --config.{key}= for equal "
            f"weights (configs/distill.py weighs its own two teachers, minilm and mpnet).")
    where = f"config key {key}={text!r} (teachers of {records_dir}: {', '.join(teacher_names)})"
    return normalised([weights[name] for name in teacher_names], list(teacher_names), where=where)


def are_equal(weights: Sequence[float] | None) -> bool:
    """No weights, or all the same: the records' own (paper's) target."""
    return weights is None or len(set(weights)) == 1


def block_scales(dims: Sequence[int], weights: Sequence[float] | None) -> np.ndarray | None:
    """float32 (sum of dims,) factors: √(N·w_i) over teacher i's block; None for no weights or equal weights."""
    if are_equal(weights):
        return None
    count = len(dims)
    return np.concatenate([np.full(dim, math.sqrt(count * weight), dtype=np.float32)
                           for dim, weight in zip(dims, weights)])


def identity_weights(text: str) -> dict[str, float] | None:
    """{name: normalised weight} of a config value for a run's identity; None for "" or equal weights."""
    weights = parse_weights(text)
    if not weights or are_equal(list(weights.values())):
        return None
    names = list(weights)
    return dict(zip(names, normalised([weights[name] for name in names], names, where=f"config key {CONFIG_KEY}")))
