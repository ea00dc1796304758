"""A trained student → a sentence-transformers folder: `export(workdir, out, ...)`, the library of
`python -m embed_jax.convert.hf` (embed_jax/convert/hf.py, its flags; usage: docs/export.md).

Writes a trained student's text path as a sentence-transformers folder that loads offline with no custom code
(`SentenceTransformer(FOLDER)`), the backbone as its family's standard Hugging Face model, one `2_Dense_{dim}`
folder per head (and the image path, embed_jax/convert/hf_vision.py), a model card and `embed_jax_export.json`
(layout: embed_jax/convert/hf_export.py). `load_exported(FOLDER)` reads it back into a Student.

Where things come from:
- the student: the stage's latest checkpoint (or --step), by `embed_jax.train.trained_student.load_student`;
- the tokenizer and the tensors the student does not train (BERT's pooler): the folder the run started from (its
  checkpoints record `init_from`), or --tokenizer=FOLDER;
- teachers, prompts and the records' identity: the records folder whose corpus fingerprint the checkpoints record,
  found beside the workdir (DIR/records, DIR/../records, DIR/../*/) or given with --records_dir;
- the card's evaluation (--eval_json): the table of python -m embed_jax.eval's results.json, and the bar chart beside
  it (results.png), copied into the folder as evaluation.png (embed_jax/convert/model_card.py).

The output folder is written aside and moved in at the end: a failed export leaves FOLDER as it was. An existing,
non-empty FOLDER is refused unless --overwrite, and --overwrite replaces only the files a previous export listed in
its embed_jax_export.json: whatever else is in the folder is kept.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from embed_jax.convert import hf_export, hf_vision, model_card, tokenizer_files
from embed_jax.convert.hf_export import EXPORT_FILE, ExportError, load_exported  # noqa: F401 (public API)
from embed_jax.data import teacher_weights
from embed_jax.models.hf_import import open_checkpoint, resolve_model_folder
from embed_jax.models.student import validate_config
from embed_jax.assets import AssetError, hub_id, public_name, resolve_model_path
from embed_jax.train import trained_student, workdir as workdir_lib
from embed_jax.train.metrics import read_metrics
from embed_jax.train.workdir import checkpoint_steps, choose_stage, stage_folders

VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model",
                    "tokenizer.model")


# ---------------------------------------------------------------------------------------------------- the workdir


def stage_summary(stage_dir: Path) -> dict[str, Any]:
    """{name, final_step, last_loss} of a stage, for the model card."""
    metrics_file = stage_dir / workdir_lib.METRICS_FILE
    rows = read_metrics(metrics_file) if metrics_file.is_file() else []
    losses = [row["loss"] for row in rows if "loss" in row]
    steps = checkpoint_steps(stage_dir)
    return {"name": stage_dir.name, "final_step": steps[-1] if steps else None,
            "last_loss": losses[-1] if losses else None}


# ---------------------------------------------------------------------------------------------------- inputs


def tokenizer_folder(tokenizer: str | None, stage_dir: Path) -> Path:
    """The folder whose tokenizer files are copied: --tokenizer, else the stage's own (trained_student's rule: the
    run's data.tokenizer, else its init_from)."""
    if tokenizer is None:
        source = trained_student.tokenizer_source(stage_dir)
        tokenizer_path, where = source.path, f"the run's tokenizer ({source.path}, {source.where})"
    else:
        tokenizer_path, where = tokenizer, f"--tokenizer={tokenizer}"
    folder = resolve_model_path(tokenizer_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{where}: {folder} is not a folder. Pass --tokenizer=FOLDER, a folder holding the "
                                "student's tokenizer files (tokenizer.json, tokenizer_config.json, ...)")
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        raise FileNotFoundError(f"{where}: {folder} holds no tokenizer ({', '.join(VOCABULARY_FILES)}). Pass "
                                "--tokenizer=FOLDER, a folder holding the student's tokenizer files")
    return folder


def default_max_seq_length(source: Path | None, tokenizer_dir: Path, text_encoder: Mapping[str, Any]) -> int:
    """The source folder's sentence-transformers max_seq_length, else the tokenizer's model_max_length, capped at
    the positions the encoder has (RoBERTa-style position ids start after the padding id)."""
    limit = text_encoder.get("max_position_embeddings") or text_encoder.get("n_positions") or 10 ** 9
    if text_encoder.get("model_type") in ("roberta", "xlm-roberta", "mpnet"):
        limit -= int(text_encoder.get("pad_token_id", 1)) + 1
    for folder, file_name, key in ((source, "sentence_bert_config.json", "max_seq_length"),
                                   (tokenizer_dir, "tokenizer_config.json", "model_max_length")):
        path = folder / file_name if folder is not None else None
        if path is not None and path.is_file():
            value = json.loads(path.read_text()).get(key)
            if isinstance(value, int) and 0 < value < 10 ** 6:
                return min(value, limit)
    return int(min(limit, 512))


# ---------------------------------------------------------------------------------------------------- the output


def previous_export_files(out: Path) -> list[str] | None:
    """The files a previous export listed in out/embed_jax_export.json, or None if it is not an export."""
    export_file = out / EXPORT_FILE
    if not export_file.is_file():
        return None
    try:
        files = json.loads(export_file.read_text()).get("files")
    except json.JSONDecodeError:
        return None
    return [str(name) for name in files] if isinstance(files, list) else None


def check_output_folder(out: Path, overwrite: bool) -> None:
    """Refuses an existing non-empty folder unless --overwrite, and --overwrite on a folder no export wrote."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out={out} is a file; give a folder path")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"--out={out} exists and is not empty. Pass --overwrite to replace the previous export "
                              "in it (only the files it listed are replaced; others are kept), or choose a new --out")
    if previous_export_files(out) is None:
        raise FileExistsError(f"--out={out} is not a folder written by embed_jax.convert.hf (no readable "
                              f"{EXPORT_FILE}): --overwrite replaces only a previous export, never other files. "
                              "Choose an empty or new --out")


def relative_files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def commit_output(staging: Path, out: Path, overwrite: bool) -> None:
    """Moves the staged export into `out`: a previous export's listed files go first; a user's file is never
    replaced (checked before anything moves)."""
    new_files = relative_files(staging)
    previous = previous_export_files(out) if out.is_dir() else None
    if out.is_dir() and any(out.iterdir()):
        check_output_folder(out, overwrite)  # the folder may have changed while exporting
        own = set(previous or [])
        foreign = [name for name in new_files if (out / name).exists() and name not in own]
        if foreign:
            raise FileExistsError(f"--out={out}: {', '.join(foreign)} exist(s) and were not written by the previous "
                                  "export; move them away or choose another --out")
    for name in previous or []:
        path = out / name
        if path.is_file() and name != EXPORT_FILE:
            path.unlink()
            for parent in path.relative_to(out).parents:
                if str(parent) != "." and (out / parent).is_dir() and not any((out / parent).iterdir()):
                    (out / parent).rmdir()
    out.mkdir(parents=True, exist_ok=True)
    for name in new_files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, out / name)
        os.chmod(out / name, 0o644)  # safetensors writes 0600; a model folder is meant to be shared


# ---------------------------------------------------------------------------------------------------- export


@dataclasses.dataclass(frozen=True)
class ExportResult:
    folder: Path
    heads: tuple[int, ...]
    default_head: int
    stage: str
    step: int
    notices: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def export(
    workdir: str | Path,
    out: str | Path,
    *,
    stage: str | None = None,
    step: int | None = None,
    default_head: int | None = None,
    overwrite: bool = False,
    tokenizer: str | None = None,
    records_dirs: Sequence[str] = (),
    skip_records: bool = False,
    eval_json: str | None = None,
    max_seq_length: int | None = None,
    title: str | None = None,
    base_model: str | None = None,
) -> ExportResult:
    """The whole export (see the module docstring); returns what was written."""
    workdir = workdir_lib.absolute_workdir(os.path.expanduser(str(workdir)))
    out = Path(out).expanduser().resolve()
    stage_dir = choose_stage(workdir, stage)
    step = step if step is not None else checkpoint_steps(stage_dir)[-1]
    if step not in checkpoint_steps(stage_dir):
        raise FileNotFoundError(f"--step={step}: {stage_dir / workdir_lib.CHECKPOINTS_DIR} has steps "
                                f"{checkpoint_steps(stage_dir)}")
    config_source = str(stage_dir / workdir_lib.STUDENT_CONFIG_FILE)
    student_config = _read_student_config(stage_dir / workdir_lib.STUDENT_CONFIG_FILE)
    text_encoder = student_config.get("text_encoder") or {}
    hf_class = hf_export.hf_model_class(text_encoder.get("model_type"), source=config_source)
    hf_export.check_text_options(student_config.get("text_options") or {})
    check_output_folder(out, overwrite)
    is_this_model = functools.partial(evaluated_here, {path.resolve() for path in (workdir, stage_dir, out)})
    eval_rows = model_card.read_eval_rows(eval_json, is_this_model) if eval_json else []
    eval_columns = model_card.read_eval_columns(eval_json) if eval_json else []
    eval_chart = model_card.chart_beside(eval_json) if eval_json else None

    identity = workdir_lib.stored_identity(stage_dir, step)
    init_from = identity.get("init_from")
    tokenizer_dir = tokenizer_folder(tokenizer, stage_dir)
    source = _init_folder(init_from)
    fingerprints = workdir_lib.records_fingerprints(workdir)
    notices = []
    if skip_records:
        records_found = []
        training_records = [{"records_dir": None, "num_records": None, "corpus_fingerprint": fingerprint}
                            for fingerprint in fingerprints]
        notices.append("Exported with --skip_records: the training records were not located, so an evaluation "
                       "cannot check its hold-out against them.")
    else:
        records_found = workdir_lib.find_training_records(workdir, fingerprints, records_dirs)
        training_records = [{"records_dir": portable_path(folder, out), "num_records": manifest.num_records,
                             "corpus_fingerprint": manifest.corpus_fingerprint} for folder, manifest in records_found]
    teachers = [{**dataclasses.asdict(teacher), "path": public_teacher_path(teacher.path, out)}
                for _, manifest in records_found[-1:] for teacher in manifest.teachers]
    datasets = list(dict.fromkeys(name for _, manifest in records_found for name in corpus_names(manifest.corpus)))

    student = trained_student.load_student(stage_dir, step)
    encoder_params, head_params, _ = hf_export.split_params(hf_export.flat_params(student))
    dims = tuple(int(dim) for dim in student.heads.dims)
    matryoshka_dims = run_matryoshka_dims(stage_dir)
    default_head, truncate_dim = _default_head(dims, student.heads.teacher_dim, default_head, matryoshka_dims)
    warnings = []
    if not matryoshka_dims:
        warnings.append(f"the heads are separate projections: truncate_dim=N gives the first N dims of the "
                        f"{default_head}-d head, which were not trained as an embedding (for N in "
                        f"{', '.join(map(str, dims[1:])) or 'any width'} load the 2_Dense_N head instead; the card "
                        "says so)")
    start = start_card_metadata(source)
    heads = hf_export.head_tensors(head_params, dims)
    tensors, report = hf_export.backbone_tensors(
        encoder_params, text_encoder, source=open_checkpoint(source) if source is not None else None)
    if report.left_out:
        notices.append(f"Not trained by embed_jax and not found in the source folder, so initialised by transformers "
                       f"on load (unused by the embedding): {', '.join(report.left_out)}.")
    if report.copied_from_source:
        notices.append(f"Copied unchanged from the source model (unused by the embedding): "
                       f"{', '.join(report.copied_from_source)}.")
    seq_length = max_seq_length or default_max_seq_length(source, tokenizer_dir, text_encoder)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        hf_export.write_backbone(staging, tensors, text_encoder)
        notices += tokenizer_files.copy_tokenizer(tokenizer_dir, staging, max_length=seq_length)
        hf_export.write_heads(staging, heads)
        hf_export.write_sentence_transformers_files(
            staging, pooling_method=student.pooling_method, hidden_size=int(student.hidden_size),
            default_dim=default_head, max_seq_length=seq_length, prompts={}, truncate_dim=truncate_dim)
        vision = hf_vision.export_vision(student, staging) if student.vision is not None else None
        if eval_chart is not None:
            shutil.copyfile(eval_chart, staging / model_card.CARD_CHART_FILE)
        facts = model_card.CardFacts(
            title=title or f"embed_jax student ({text_encoder.get('model_type')}, {workdir.name}/{stage_dir.name})",
            family=text_encoder.get("model_type"), hf_class=hf_class, hidden_size=int(student.hidden_size),
            num_layers=text_encoder.get("num_hidden_layers") or text_encoder.get("n_layer"),
            num_parameters=sum(a.size for a in encoder_params.values()) + sum(a.size for a in head_params.values()),
            pooling=student.pooling_method, heads=dims, default_head=default_head,
            teacher_dim=student.heads.teacher_dim, max_seq_length=seq_length, init_from=str(init_from or tokenizer),
            source={"workdir": portable_path(workdir, out), "stage": stage_dir.name, "step": step},
            stages=[stage_summary(path) for path in stage_folders(workdir) if checkpoint_steps(path)],
            teachers=teachers, training_records=training_records, notices=notices, eval_rows=eval_rows,
            eval_chart=model_card.CARD_CHART_FILE if eval_chart is not None else None, eval_columns=eval_columns,
            base_model=base_model or hub_id(init_from), license=start.get("license"),
            language=as_list(start.get("language")), datasets=datasets, matryoshka_dims=matryoshka_dims,
            truncate_dim=truncate_dim)
        (staging / "README.md").write_text(model_card.render(facts), encoding="utf-8")
        export_record = {
            "format_version": hf_export.FORMAT_VERSION,
            "student_config": student.config,
            "heads": list(dims),
            "default_head": default_head,
            "source": {"workdir": portable_path(workdir, out), "stage": stage_dir.name, "step": step},
            "training_records": training_records,
            "head_kind": "matryoshka" if matryoshka_dims else "separate",
            "matryoshka_dims": list(matryoshka_dims),
            "truncate_dim": truncate_dim,
            "vision": vision,
            "teachers": teachers,
            "teacher_weights": run_teacher_weights(stage_dir, teachers, str(records_found[-1][0]) if records_found
                                                   else "--skip_records"),
            "max_seq_length": seq_length,
            "notices": notices,
        }
        export_record["files"] = relative_files(staging) + [EXPORT_FILE]
        (staging / EXPORT_FILE).write_text(json.dumps(export_record, indent=1, default=str) + "\n")
        commit_output(staging, out, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(folder=out, heads=dims, default_head=default_head, stage=stage_dir.name, step=step,
                        notices=tuple(notices), warnings=tuple(warnings))


# The parts of `all` (embed_jax/data/corpora.py), for the card's datasets.
BUILTIN_PARTS = {"all": ("wiki", "lee_background", "wordnet")}


def corpus_names(corpus: Mapping[str, Any]) -> list[str]:
    """The training corpora as the card's `datasets` name them: the built-in parts, a tfds name, or the files'
    names (never their paths)."""
    kind = corpus.get("kind")
    if kind == "builtin":
        return [f"embed_jax-builtin/{name}" for part in str(corpus.get("name", "")).split("+") if part
                for name in BUILTIN_PARTS.get(part, (part,))]
    if kind == "tfds":
        return [str(corpus.get("name"))]
    return [Path(str(entry.get("path", ""))).name for entry in corpus.get("files") or [] if isinstance(entry, Mapping)]


def start_card_metadata(folder: Path | None) -> dict[str, Any]:
    """The YAML front matter of the start folder's own README.md (license, language, ...); {} without one."""
    readme = folder / "README.md" if folder is not None else None
    if readme is None or not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, flags=re.S)
    try:
        data = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(item) for item in (value if isinstance(value, list) else [value])]


def run_teacher_weights(stage_dir: Path, teachers: Sequence[Mapping[str, Any]], records_dir: str
                        ) -> dict[str, float] | None:
    """{teacher name: weight} of the run's data.teacher_weights (normalised, the records' order); None for the
    paper's equal weights or an unknown run."""
    path = workdir_lib.run_config_file(stage_dir)
    if path is None or not teachers:
        return None
    text = str((json.loads(path.read_text(encoding="utf-8")).get("data") or {}).get("teacher_weights") or "")
    names = [str(teacher["name"]) for teacher in sorted(teachers, key=lambda teacher: teacher.get("order", 0))]
    weights = teacher_weights.weights_for_teachers(text, names, records_dir=records_dir)
    return None if weights is None else dict(zip(names, weights))


def run_matryoshka_dims(stage_dir: Path) -> tuple[int, ...]:
    """loss.matryoshka_dims of the run that trained the stage (its workdir's config.json); () when none."""
    path = workdir_lib.run_config_file(stage_dir)
    if path is None:
        return ()
    loss = json.loads(path.read_text(encoding="utf-8")).get("loss") or {}
    return tuple(int(dim) for dim in loss.get("matryoshka_dims") or ())


def public_teacher_path(path: str, out: Path) -> str:
    """A teacher as the folder records it: `asset:NAME` and Hub ids as they are, a local folder relative to the
    export (embed_jax.convert.router finds it there)."""
    if path.startswith("asset:") or hub_id(path):
        return path
    return portable_path(path, out)


def portable_path(path: str | Path | None, folder: Path) -> str | None:
    """A path as the exported folder may hold it: relative to that folder (never absolute)."""
    return None if path is None else os.path.relpath(Path(path).resolve(), folder)


def evaluated_here(folders: set[Path], row: Mapping[str, Any]) -> bool:
    """Whether an evaluation row scored this export: its spec is the workdir, the stage or the exported folder."""
    stage_dir = (row.get("source") or {}).get("stage_dir") if isinstance(row.get("source"), Mapping) else None
    model = row.get("model")
    candidates = [stage_dir] + ([model] if isinstance(model, str) and not re.match(r"^\w+:", model) else [])
    return any(Path(str(path)).expanduser().resolve() in folders for path in candidates if path)


def _read_student_config(path: Path) -> dict[str, Any]:
    """The stage's student config, checked as the Student will check it (errors name the file and the key)."""
    try:
        return validate_config(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} line {error.lineno}: not valid JSON ({error.msg})") from error
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def _init_folder(init_from: str | None) -> Path | None:
    """The run's init folder if it is still there (for tensors the student does not train), else None."""
    if not init_from:
        return None
    try:
        folder = resolve_model_path(init_from)
        return resolve_model_folder(folder)
    except (AssetError, FileNotFoundError):
        return None


def _default_head(dims: tuple[int, ...], teacher_dim: int | None, requested: int | None,
                  matryoshka_dims: tuple[int, ...] = ()) -> tuple[int, int | None]:
    """(the head modules.json uses, config_sentence_transformers.json's truncate_dim or None): a Matryoshka prefix
    as the default is FC1 truncated."""
    if requested is None:
        return (teacher_dim if teacher_dim is not None else max(dims)), None
    if requested in matryoshka_dims and requested not in dims:
        return int(teacher_dim), requested
    if requested not in dims:
        prefixes = f" and FC1's Matryoshka prefixes {', '.join(map(str, matryoshka_dims))}" if matryoshka_dims else ""
        raise ValueError(f"--default_head={requested}: the student's heads are {', '.join(map(str, dims))}{prefixes}")
    return requested, None
