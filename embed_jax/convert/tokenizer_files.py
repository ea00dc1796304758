"""The exported folder's tokenizer: copied from the source, then set to pad and truncate the way the student reads.

Every embed_jax family numbers positions 0…L−1 in every row (embed_jax/models/*.py; Hugging Face's default without
position_ids), and training pads and truncates on the right (embed_jax/data/pipeline.py). A tokenizer that pads on
the left shifts a short row's positions, so `SentenceTransformer.encode` gives that row another vector than the Flax
model (measured on a GPT-2 student: cosine 0.46–0.98 for padded rows, 1.0 one text at a time). So the folder's
tokenizer_config.json always says `padding_side: right` and `truncation_side: right`, and a tokenizer without a pad
token (GPT-2, some Qwen2 folders) gets its end-of-text token as one: the pad id never matters, the mask drops it.

The window goes with the tokenizer: given `max_length` (the folder's max_seq_length), tokenizer_config.json's
`model_max_length` and tokenizer.json's `truncation` say it, so an engine that calls `tokenizer(texts,
truncation=True)` (or the `tokenizers` library on tokenizer.json) cuts a long text where the model does. Without it,
all-MiniLM-L6-v2's files say 512 and 128 where its folder reads 256 tokens, and a tiny GPT-2's say nothing at all
(docs/export.md, "The window").

    notices = copy_tokenizer(source_folder, export_folder, max_length=256)   # [] or sentences for the model card
    notices = fit_padding(folder, max_length=256)                             # the same settings on a folder in place
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "added_tokens.json", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model")
CONFIG_FILE = "tokenizer_config.json"
SIDE = "right"  # embed_jax/data/pipeline.py pads with np.pad after the tokens and truncates the tail


class TokenizerFilesError(ValueError):
    """The tokenizer cannot be made to batch the way the student reads; the message names the folder and the fix."""


def copy_tokenizer(source: Path, folder: Path, *, max_length: int | None = None) -> list[str]:
    """Copies the tokenizer files from `source` into `folder`, then `fit_padding(folder, max_length=...)`."""
    for name in TOKENIZER_FILES:
        if (Path(source) / name).is_file():
            shutil.copy2(Path(source) / name, Path(folder) / name)
    return fit_padding(Path(folder), source=Path(source), max_length=max_length)


def padding_settings(tokenizer: Any, folder: Path) -> dict[str, str]:
    """The tokenizer_config.json keys that must change (empty when the tokenizer already batches right)."""
    changes = {key: SIDE for key in ("padding_side", "truncation_side") if getattr(tokenizer, key) != SIDE}
    if tokenizer.pad_token is None:
        substitute = tokenizer.eos_token or tokenizer.unk_token
        if substitute is None:
            raise TokenizerFilesError(
                f"the tokenizer in {folder} has no pad, end-of-text or unknown token to pad batches with; give it a "
                "pad token (tokenizer.add_special_tokens({'pad_token': ...}), save it) and pass --tokenizer=FOLDER")
        changes["pad_token"] = str(substitute)
    return changes


def truncation_settings(max_length: int) -> dict[str, Any]:
    """tokenizer.json's `truncation` for the window (the `tokenizers` library's own layout)."""
    return {"direction": "Right", "max_length": int(max_length), "strategy": "LongestFirst", "stride": 0}


def fit_window(folder: Path, max_length: int) -> None:
    """Writes the window into `folder`'s tokenizer files: model_max_length (tokenizer_config.json) and, where there
    is a tokenizer.json, its truncation (only what differs; every other byte of the files stays)."""
    config_path, fast_path = Path(folder) / CONFIG_FILE, Path(folder) / "tokenizer.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    if config.get("model_max_length") != int(max_length):
        config["model_max_length"] = int(max_length)
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if fast_path.is_file():
        fast = json.loads(fast_path.read_text(encoding="utf-8"))
        if fast.get("truncation") != truncation_settings(max_length):
            fast["truncation"] = truncation_settings(max_length)
            fast_path.write_text(json.dumps(fast, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def fit_padding(folder: Path, *, source: Path | None = None, max_length: int | None = None) -> list[str]:
    """Writes right padding, right truncation and a pad token into `folder`'s tokenizer_config.json (only the keys
    that differ; the vocabulary files stay as copied), and the window when `max_length` is given (`fit_window`);
    returns a notice per change worth a model card line."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if max_length is not None:
        fit_window(folder, max_length)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    changes = padding_settings(tokenizer, source or folder)
    if not changes:
        return []
    config_path = folder / CONFIG_FILE
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config.update(changes)
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    reloaded = AutoTokenizer.from_pretrained(str(folder))
    if padding_settings(reloaded, folder):
        read = {key: getattr(reloaded, key) for key in changes}
        raise TokenizerFilesError(f"{config_path}: wrote {changes} but the tokenizer still reads {read}; save the "
                                  "tokenizer with those settings yourself and pass --tokenizer=FOLDER")
    notices = []
    if "pad_token" in changes:
        notices.append(f"The tokenizer had no pad token; {changes['pad_token']!r} serves as one (padded positions "
                       "are masked out).")
    for key in ("padding_side", "truncation_side"):
        if key in changes:
            notices.append(f"The source tokenizer's {key} was {getattr(tokenizer, key)!r}; set to '{SIDE}', as the "
                           "student was trained (its positions count from the first token).")
    return notices
