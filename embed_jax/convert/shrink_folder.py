"""A frozen model shrunk by heads trained on its own cached vectors (embed_jax/train/shrink_heads.py), written as a
sentence-transformers folder (docs/shrink.md).

The folder: the source model's folder copied unchanged, plus one `2_Dense_{dim}` folder per head (stella's layout,
written by embed_jax.convert.hf_export.write_heads), routed after the model's normalised vector:
Transformer → Pooling → Normalize → 2_Dense_{first dim} → Normalize; and `embed_jax_export.json` (the layout of
embed_jax/convert/hf_export.py; "student_config" is null: the folder is the source model plus heads, not an embed_jax
Student). `shrink` is the whole run; `python -m embed_jax.convert.shrink_cached` is its command line.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from embed_jax.convert import hf_export, st_export, tokenizer_files
from embed_jax.data.records import MANIFEST_NAME, Manifest
from embed_jax.models.heads import EmbeddingHeads
from embed_jax.teachers import encoders
from embed_jax.assets import public_name, resolve_model_path
from embed_jax.train import shrink_heads
from embed_jax.train.shrink_heads import ShrinkError

STAGE_NAME = "shrink_cached"


def source_folder(manifest: Manifest, teacher: str, *, where: str) -> Path:
    """The teacher's sentence-transformers folder, checked to be the one that made the records' vectors."""
    info = shrink_heads.teacher_info(manifest, teacher, where=where)
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
            f"embed_jax's self-distillation from its own vectors (`python -m embed_jax.convert.shrink_cached`, "
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
        window = json.loads((source / "sentence_bert_config.json").read_text()).get("max_seq_length") if (
            source / "sentence_bert_config.json").is_file() else None
        if isinstance(window, int) and window > 0:  # the source's tokenizer files may say another window
            tokenizer_files.fit_window(staging, window)
        params = {f"heads.{name}": value for name, value in hf_export.flat_params(heads).items()}
        hf_export.write_heads(staging, hf_export.head_tensors(params, dims))
        modules = shrunk_modules(json.loads((source / "modules.json").read_text()), dims[0])
        (staging / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
        if (staging / "README.md").is_file():
            (staging / "README.md").rename(staging / "SOURCE_README.md")
        dense_index = len(modules) - 2
        (staging / "README.md").write_text(model_card(record["source"]["name"], dims, dense_index))
        files = sorted(str(path.relative_to(staging)) for path in staging.rglob("*") if path.is_file())
        record = {**record, "files": files + [hf_export.EXPORT_FILE]}
        (staging / hf_export.EXPORT_FILE).write_text(json.dumps(record, indent=1) + "\n")
        if out.exists():  # refused before training; checked again in case it appeared meanwhile
            raise FileExistsError(f"--out={out} appeared while training; nothing was written. Choose a new --out")
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)


def export_record(*, manifest: Manifest, records_dir: Path, teacher: str, folder: Path, dims: Sequence[int],
                  steps: int, settings: dict[str, Any], result: shrink_heads.TrainResult, heldout: dict[str, Any],
                  out: Path) -> dict:
    """embed_jax_export.json (hf_export's layout: evaluation reads training_records) plus how it was trained; local
    paths relative to the folder `out` (a published folder holds no path of this machine)."""
    info = shrink_heads.teacher_info(manifest, teacher, where=str(records_dir))
    return {
        "format_version": hf_export.FORMAT_VERSION,
        "student_config": None,  # not an embed_jax Student: the source model unchanged, heads on its unit vector
        "heads": list(dims),
        "default_head": dims[0],
        "source": {"workdir": None, "stage": STAGE_NAME, "step": steps,
                   "model": st_export.public_teacher_path(info.path, out), "name": public_name(info.path),
                   "folder": st_export.portable_path(folder, out)},
        "training_records": [{"records_dir": st_export.portable_path(records_dir, out), "num_records": manifest.num_records,
                              "corpus_fingerprint": manifest.corpus_fingerprint}],
        "vision": None,
        "shrink": {"teacher": teacher, "teacher_window": info.max_seq_length, **settings,
                   "train_seconds": round(result.seconds, 2), "heldout": heldout, "history": result.history},
    }


def shrink(records: str, teacher: str, dims: Sequence[int], out: str, *, steps: int = 2000, batch: int = 128,
           learning_rate: float = 1e-3, holdout: int = 512, seed: int = 0, log_every: int = 100,
           log: Callable[[str], None] = print) -> tuple[EmbeddingHeads, dict[str, Any]]:
    """The whole run (module docstring); returns the trained heads and the embed_jax_export.json it wrote."""
    records_dir, out_path = Path(records).expanduser().resolve(), Path(out).expanduser().resolve()
    if out_path.exists():
        raise ShrinkError(f"--out={out_path} exists; nothing was written. Choose a new folder (this never "
                          "overwrites a model folder)")
    manifest, _, vectors = shrink_heads.read_records(records_dir, teacher)
    dims = shrink_heads.check_settings(dims, model_dim=vectors.shape[1], num_records=len(vectors), holdout=holdout,
                                        batch=batch, steps=steps, learning_rate=learning_rate)
    folder = source_folder(manifest, teacher, where=str(records_dir / MANIFEST_NAME))
    train_indices, heldout_indices = shrink_heads.split_holdout(len(vectors), holdout, seed)
    log(f"[shrink] {teacher} ({vectors.shape[1]}-d) from {records_dir}: {len(train_indices)} training and "
        f"{len(heldout_indices)} held-out records → heads {', '.join(map(str, dims))}")
    run = shrink_heads.shrink_heads(vectors, train_indices, heldout_indices, dims=dims, steps=steps, batch=batch,
                                     learning_rate=learning_rate, seed=seed, log_every=log_every, log=log)
    record = export_record(manifest=manifest, records_dir=records_dir, teacher=teacher, folder=folder, dims=dims,
                           steps=steps, settings=run.settings, result=run.result, heldout=run.heldout, out=out_path)
    write_folder(out_path, folder, run.result.heads, record)
    log(f"[shrink] wrote {out_path}: SentenceTransformer({str(out_path)!r}) gives {dims[0]}-d vectors")
    return run.result.heads, record
