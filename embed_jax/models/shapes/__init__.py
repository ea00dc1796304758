"""Named model shapes: the config.json of published encoders, shipped so that a model can be built from its shape
alone (`nnx.eval_shape`, no weights) — what the TPU plan (embed_jax/plan/) compiles before anyone downloads 6 GB.

    stella_en_1.5B_v5.json   dunzhang/stella_en_1.5B_v5's config.json (the paper's student: Qwen2, 1.54B parameters),
                             as published on its model page (Qwen2 1.5B: 28 layers, width 1536, MLP 8960, 12 query and
                             2 key/value heads, vocabulary 151,646)

A shape is found by the model folder's name: `init_from=/models/stella_en_1.5B_v5` plans with this file when the
folder (or its config.json) is not there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHAPES_DIR = Path(__file__).resolve().parent


def named_shapes() -> list[str]:
    """The names of the shipped shapes (file names without .json)."""
    return sorted(path.stem for path in SHAPES_DIR.glob("*.json"))


def named_shape(name: str) -> dict[str, Any] | None:
    """The shipped config.json of `name` (a shape name or a folder path ending in one), None if none ships."""
    stem = Path(str(name).rstrip("/")).name
    path = SHAPES_DIR / f"{stem}.json"
    return json.loads(path.read_text()) if stem and path.is_file() else None
