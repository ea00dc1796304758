"""The encoder's config.json for a plan: the init folder's own, or a shipped shape (embed_jax/models/shapes/).

    --shape=PATH/config.json or --shape=FOLDER   that file
    --shape=NAME                                 a shipped shape (stella_en_1.5B_v5)
    model.init_from=FOLDER                       FOLDER's config.json (sentence-transformers folders too), else the
                                                 shipped shape named like FOLDER's last component
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_collections

from embed_jax.assets import resolve_model_path
from embed_jax.models import hf_import, shapes
from embed_jax.plan.programs import PlanError


def _read(path: Path, where: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PlanError(f"{where}: {path} line {error.lineno}: not valid JSON ({error.msg})") from None


def _from_folder(folder: Path) -> dict[str, Any] | None:
    try:
        return hf_import.read_config(folder)
    except FileNotFoundError:
        return None


def encoder_config(config: ml_collections.ConfigDict, shape: str = "") -> dict[str, Any]:
    """The config.json dict the student's encoder is built from; PlanError naming what to pass when there is none."""
    known = ", ".join(shapes.named_shapes())
    if shape:
        path = Path(shape).expanduser()
        if path.is_file():
            return _read(path, "--shape")
        if path.is_dir() and (found := _from_folder(path)) is not None:
            return found
        if (named := shapes.named_shape(shape)) is not None:
            return named
        raise PlanError(f"--shape={shape!r} is neither a config.json, a model folder nor a shipped shape ({known})")
    init_from = str(config.model.get("init_from", "") or "")
    if init_from:
        folder = resolve_model_path(init_from)
        if folder.is_dir() and (found := _from_folder(folder)) is not None:
            return found
        if (named := shapes.named_shape(init_from)) is not None:
            return named
    raise PlanError(f"config key model.init_from={init_from!r} has no config.json and names no shipped shape "
                    f"({known}); point it at the model's folder, or pass --shape=NAME or --shape=PATH/config.json")
