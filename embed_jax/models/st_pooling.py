"""The pooling a sentence-transformers folder declares, in embed_jax's names (embed_jax/models/pooling.py).

A folder's modules.json names its Pooling module; that module's config.json sets one `pooling_mode_*` flag to true.
`pooling_from_folder` reads it, for a student built from a folder and for an exported folder loaded again
(docs/export.md: export writes the same flags).
"""
from __future__ import annotations

import json
from pathlib import Path

# sentence-transformers 1_Pooling/config.json flags → embed_jax pooling names.
SENTENCE_TRANSFORMERS_POOLING = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_lasttoken": "last",
}
SENTENCE_TRANSFORMERS_POOLING_MODES = {"mean": "mean", "cls": "cls", "lasttoken": "last"}  # its "pooling_mode" key


def pooling_from_folder(folder: str | Path) -> str:
    """The pooling a sentence-transformers folder declares (1_Pooling/config.json), else the paper's mean."""
    folder = Path(folder)
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return "mean"
    for module in json.loads(modules_file.read_text()):
        if module.get("type", "").endswith("Pooling"):
            settings = json.loads((folder / module["path"] / "config.json").read_text())
            if isinstance(settings.get("pooling_mode"), str):  # sentence-transformers ≥ 6 writes one name
                settings = {flag: True for flag, name in SENTENCE_TRANSFORMERS_POOLING.items()
                            if SENTENCE_TRANSFORMERS_POOLING_MODES.get(settings["pooling_mode"]) == name}
            chosen = [name for flag, name in SENTENCE_TRANSFORMERS_POOLING.items() if settings.get(flag)]
            if len(chosen) != 1:
                raise ValueError(
                    f"{folder / module['path'] / 'config.json'} asks for pooling "
                    f"{[flag for flag, on in settings.items() if on is True]}; embed_jax supports exactly one of "
                    f"{list(SENTENCE_TRANSFORMERS_POOLING)}: pass pooling_method= to choose"
                )
            return chosen[0]
    return "mean"
