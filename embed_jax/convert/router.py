"""python -m embed_jax.convert.router --queries=STUDENT_FOLDER --out=FOLDER [--documents=FOLDER,FOLDER ...]
    [--document_weights=W,W] [--overwrite]

The asymmetric setup (LEAF's use: documents indexed once by the big teachers, queries encoded by the small student)
as one sentence-transformers folder: a `Router` whose "query" route is the student's exported folder (its default
head) and whose "document" route is its teachers, each L2-normalised, concatenated and weighted as the student was
trained (embed_jax/convert/st_concat.py; the target of docs/method.md §2). It scores what
`python -m embed_jax.eval --model=asym:STUDENT` scores (tests/convert/test_router.py):

    model = SentenceTransformer(FOLDER, trust_remote_code=True)   # the concatenation is the folder's own module
    scores = model.encode_query(queries) @ model.encode_document(documents).T

The teachers are those of the student's embed_jax_export.json (bundled assets, Hub ids in the cache, or local folders
relative to the export), their weights its run's data.teacher_weights; --documents (with --document_weights) names
other document models, one folder a single model with no concatenation. Every document model's folder must be here:
a missing one is refused by name before anything is written.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from embed_jax import cli
from embed_jax.assets import AssetError, public_name, resolve_model_path
from embed_jax.convert import hf_export, st_concat

EXIT_CODE = 1
MODULE_FILE = "embed_jax_concat.py"  # st_concat.py as the folder holds it (trust_remote_code loads it from there)
ROUTER_RECORD = "embed_jax_router.json"

FLAGS = cli.program_flags()
_QUERIES = flags.DEFINE_string("queries", None, "The student's exported folder (python -m embed_jax.convert.hf).",
                               flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Folder to write the Router model into (new or empty).", flag_values=FLAGS)
_DOCUMENTS = flags.DEFINE_list("documents", [], "Document models (sentence-transformers folders or asset:NAME), "
                               "concatenated in order (default: the student's teachers).", flag_values=FLAGS)
_WEIGHTS = flags.DEFINE_list("document_weights", [], "One weight per --documents model (default: equal; with the "
                             "default teachers: the run's data.teacher_weights).", flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an earlier Router folder in --out.", flag_values=FLAGS)


class RouterError(ValueError):
    """The Router folder cannot be built; the message names the flag or file and what to do."""


def teachers_of(student: Path) -> tuple[list[str], list[str], list[float] | None]:
    """(names, paths, weights or None) of the teachers an export records in its embed_jax_export.json."""
    record_path = student / hf_export.EXPORT_FILE
    if not record_path.is_file():
        raise RouterError(f"--queries={student}: no {hf_export.EXPORT_FILE}, so its teachers are unknown; write the "
                          "folder with python -m embed_jax.convert.hf, or name the document models with --documents")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    teachers = sorted(record.get("teachers") or [], key=lambda teacher: teacher.get("order", 0))
    if not teachers:
        raise RouterError(f"{record_path}: records no teachers (exported with --skip_records?); name the document "
                          "models with --documents")
    names, paths = [str(t["name"]) for t in teachers], [str(t["path"]) for t in teachers]
    weights = record.get("teacher_weights")
    return names, paths, [float(weights[name]) for name in names] if isinstance(weights, dict) else None


def document_folder(path: str, relative_to: Path, where: str) -> Path:
    """A document model's sentence-transformers folder, or a RouterError naming it and where it was looked for."""
    try:
        folder = resolve_model_path(path)
    except AssetError as error:
        raise RouterError(f"{where}: {error}") from None
    if not folder.is_absolute():
        folder = (relative_to / folder) if (relative_to / folder).exists() else folder
    if not (folder / "modules.json").is_file():
        raise RouterError(f"{where}: the document model {path!r} has no sentence-transformers folder at "
                          f"{folder.resolve()} (no modules.json); put it there or name the document models with "
                          "--documents=FOLDER[,FOLDER]")
    return folder


def normalised_weights(weights: Sequence[float] | None, count: int, where: str) -> list[float]:
    if weights is None or not len(weights):
        return [1.0 / count] * count
    if len(weights) != count or any(weight < 0 for weight in weights) or not sum(weights) > 0:
        raise RouterError(f"{where}: give {count} weights ≥ 0 (one per document model, not all 0), got "
                          f"{list(weights)}")
    return [weight / sum(weights) for weight in weights]


def build(queries: str | Path, out: str | Path, *, documents: Sequence[str] = (),
          weights: Sequence[float] | None = None, overwrite: bool = False) -> Path:
    """Writes the Router folder (module docstring); returns it."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Router

    student, out = Path(queries).expanduser().resolve(), Path(out).expanduser().resolve()
    if not (student / "modules.json").is_file():
        raise RouterError(f"--queries={student}: not a sentence-transformers folder (no modules.json); give the "
                          "student's folder written by python -m embed_jax.convert.hf")
    if out.exists() and any(out.iterdir()) and not (overwrite and (out / ROUTER_RECORD).is_file()):
        raise RouterError(f"--out={out} is not empty; choose a new folder (--overwrite replaces only an earlier "
                          "Router folder)")
    if documents:
        names = [Path(str(path)).name.removeprefix("asset:") or f"model_{index}" for index, path in
                 enumerate(documents)]
        paths, where = list(documents), "--documents"
    else:
        names, paths, weights = teachers_of(student)[0], teachers_of(student)[1], weights or teachers_of(student)[2]
        where = f"{student / hf_export.EXPORT_FILE} (teachers)"
    folders = [document_folder(path, student, where) for path in paths]
    weights = normalised_weights(weights, len(folders), "--document_weights" if documents else where)
    query_model = SentenceTransformer(str(student), device="cpu", local_files_only=True)
    document_models = [SentenceTransformer(str(folder), device="cpu", local_files_only=True) for folder in folders]
    dims = (query_model.get_embedding_dimension(),
            sum(model.get_embedding_dimension() for model in document_models))
    if dims[0] != dims[1]:
        raise RouterError(f"--queries={student} gives {dims[0]}-d vectors but the document models "
                          f"({' + '.join(names)}) {dims[1]}-d: export the student with --default_head={dims[1]} (its "
                          "FC1, the teachers' dimension) or pick document models of its dimension")
    document_route = ([st_concat.ConcatenatedModels(document_models, names, weights)] if len(document_models) > 1
                      else list(document_models[0].children()))
    router = Router.for_query_document(query_modules=list(query_model.children()), document_modules=document_route)
    model = SentenceTransformer(modules=[router], similarity_fn_name="cosine", device="cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.router-", dir=out.parent))
    try:
        model.save(str(staging), create_model_card=False)
        if len(document_models) > 1:
            shutil.copyfile(st_concat.__file__, staging / MODULE_FILE)
            retype_concat(staging)
        (staging / "README.md").write_text(card(names, paths, weights, student.name, dims[0]), encoding="utf-8")
        (staging / ROUTER_RECORD).write_text(json.dumps(
            {"queries": student.name, "documents": names, "weights": weights, "dim": dims[0]}, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def retype_concat(folder: Path) -> None:
    """router_config.json names the concatenation by the folder's own module file, not by embed_jax's package."""
    path = folder / "router_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["types"] = {key: (f"{MODULE_FILE.removesuffix('.py')}.ConcatenatedModels"
                             if value.endswith(".ConcatenatedModels") else value)
                       for key, value in config["types"].items()}
    path.write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")


def card(names: Sequence[str], paths: Sequence[str], weights: Sequence[float], student: str, dim: int) -> str:
    parts = ", ".join(f"{public_name(path)} (weight {weight:.2f})" for path, weight in zip(paths, weights))
    return ("---\nlibrary_name: sentence-transformers\npipeline_tag: sentence-similarity\n"
            "tags: [sentence-transformers, embed_jax, asymmetric, router]\n---\n\n"
            f"# Asymmetric retrieval: {student} for queries, its teachers for documents\n\n"
            f"Queries go through the distilled student `{student}`; documents through {parts}, each L2-normalised, "
            f"concatenated ({dim}-d, block i scaled by √w_i). Both sides live in the teachers' space, so index the "
            "documents once with the big models and encode queries with the small one.\n\n```python\n"
            "from sentence_transformers import SentenceTransformer\n\n"
            "model = SentenceTransformer('PATH/TO/THIS/FOLDER', trust_remote_code=True)  # embed_jax_concat.py: the "
            "concatenation\nscores = model.similarity(model.encode_query(['a question']), "
            "model.encode_document(['a passage']))\n```\n")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.parse(FLAGS, argv, doc=__doc__)
        cli.require(FLAGS, ["queries", "out"])
        weights = [float(value) for value in _WEIGHTS.value] if _WEIGHTS.value else None
    except (cli.UsageError, ValueError) as error:
        return cli.fail(error if isinstance(error, cli.UsageError) else
                        f"--document_weights={','.join(_WEIGHTS.value)}: write numbers, e.g. 0.15,0.85")
    try:
        folder = build(_QUERIES.value, _OUT.value, documents=_DOCUMENTS.value, weights=weights,
                       overwrite=_OVERWRITE.value)
    except (OSError, ValueError) as error:
        return cli.fail(error, code=EXIT_CODE)
    print(f"wrote {folder}: SentenceTransformer({str(folder)!r}, trust_remote_code=True).encode_query(...) / "
          ".encode_document(...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
