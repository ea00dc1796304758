"""--model specs → loaded models.

    asset:all-MiniLM-L6-v2 | asset:all-mpnet-base-v2   a bundled teacher (sentence-transformers)
    FOLDER with modules.json                           any sentence-transformers folder, embed_jax exports included
    FOLDER with student_config.json                    a stage folder of embed_jax.main (Flax)
    WORKDIR with stage*/student_config.json            its last trained stage (as the exporter picks it)
    FOLDER with onnx_export.json | FOLDER/GRAPH.onnx   an ONNX graph of embed_jax.convert.onnx (onnxruntime): the
                                                       folder's model.onnx, or that graph (model_int8.onnx)
    concat:SPEC+SPEC[+...]                             the concatenated teacher (docs/method.md §2)
    concat:SPEC+SPEC[+...]@W,W[,...]                   the same, part i weighted by W_i as data.teacher_weights
                                                       weighs a run's teachers (docs/training.md, "Teacher weights")
    pca:SPEC@DIM                                       SPEC reduced to DIM by PCA (baseline)
    asym:QUERY_SPEC|DOC_SPEC                           queries by one model, documents by another (retrieval only)
    asym:STUDENT                                       queries by the student's FC1, documents by its teachers:
                                                       concat:T1+T2+... (or the one teacher) of its records' manifest,
                                                       @weights of its run's data.teacher_weights

The hold-out check (overlap.py) runs while loading: a model whose training records contain hold-out material stops
here, before any encoding.
"""
from __future__ import annotations

import json
from pathlib import Path

from embed_jax.data import records, teacher_weights
from embed_jax.eval import overlap
from embed_jax.eval.derived import ASYMMETRIC_SEPARATOR, AsymmetricModel, ConcatenatedModel, PcaModel
from embed_jax.eval.encoding import EncodeContext, EvalModel, ModelSpecError
from embed_jax.eval.flax_model import FlaxStudentModel
from embed_jax.eval.onnx_model import OnnxModel, is_onnx_spec
from embed_jax.assets import AssetError, resolve_model_path
from embed_jax.train.workdir import (STUDENT_CONFIG_FILE, choose_stage, is_stage_folder, run_config_file,
                                     stage_folders)

CONCAT_PREFIX, PCA_PREFIX, ASSET_PREFIX, ASYMMETRIC_PREFIX = "concat:", "pca:", "asset:", "asym:"
SPEC_FORMS = ("asset:all-MiniLM-L6-v2, asset:all-mpnet-base-v2, a sentence-transformers folder (modules.json), an "
              "embed_jax stage folder (student_config.json) or workdir (stage*/), an ONNX export folder "
              "(onnx_export.json) or one of its .onnx graphs, concat:SPEC+SPEC[@W,W], pca:SPEC@DIM, "
              "asym:QUERY_SPEC|DOC_SPEC, asym:STUDENT")


def spec_help() -> str:
    """The table of spec forms in this module's docstring, for `python -m embed_jax.eval --help`."""
    return __doc__.partition("\n\n")[2].partition("\n\nThe hold-out check")[0]


def teachers_spec(spec: str, student: EvalModel) -> str:
    """The spec of a student's teacher target, from the manifest of the records it was trained on (the folders the
    hold-out check read): its one teacher, or concat: of its teachers in the manifest's order, weighted as its run's
    data.teacher_weights weighed them."""
    if not student.holdout.records_dirs:
        raise ModelSpecError(f"model spec {spec!r}: the training records of {student.spec} were not found "
                             f"({student.holdout.note}), so its teachers are unknown; name the documents' model: "
                             f"asym:{student.spec}{ASYMMETRIC_SEPARATOR}DOC_SPEC.")
    teacher_lists = {tuple(teacher.path for teacher in records.read_manifest(folder).teachers)
                     for folder in student.holdout.records_dirs}
    if len(teacher_lists) > 1:
        raise ModelSpecError(f"model spec {spec!r}: {student.spec} was trained on records of different teachers "
                             f"({'; '.join(' + '.join(paths) for paths in sorted(teacher_lists))}); name the "
                             f"documents' model: asym:{student.spec}{ASYMMETRIC_SEPARATOR}DOC_SPEC.")
    paths = next(iter(teacher_lists))
    if len(paths) == 1:
        return paths[0]
    folder = student.holdout.records_dirs[0]
    names = [teacher.name for teacher in sorted(records.read_manifest(folder).teachers, key=lambda t: t.order)]
    try:
        weights = teacher_weights.weights_for_teachers(trained_teacher_weights(student), names,
                                                       records_dir=str(folder))
    except teacher_weights.TeacherWeightsError as error:
        raise ModelSpecError(f"model spec {spec!r}: the run config of {student.spec}: {error}") from None
    suffix = "" if teacher_weights.are_equal(weights) else "@" + ",".join(repr(weight) for weight in weights)
    return CONCAT_PREFIX + "+".join(paths) + suffix


def trained_teacher_weights(student: EvalModel) -> str:
    """data.teacher_weights of the run that trained a stage folder (its workdir's config.json); "" otherwise."""
    stage_dir = getattr(student, "stage_dir", None)
    path = run_config_file(Path(stage_dir)) if stage_dir else None
    if path is None:
        return ""
    return str(json.loads(path.read_text(encoding="utf-8")).get("data", {}).get("teacher_weights", "") or "")


def concat_weights_text(body: str) -> tuple[str, str | None]:
    """(the parts, the weights after the last '@') of a concat spec's body; None when it has no weights. Weights are
    two or more numbers, so they hold a comma: a part's own '@' (pca:SPEC@DIM) never does."""
    parts, separator, tail = body.rpartition("@")
    if separator and "," in tail and "+" not in tail:
        return parts, tail
    return body, None


def concat_weights(spec: str, text: str, parts: list[str]) -> tuple[float, ...]:
    """One weight per part, normalised to sum 1; errors name the spec and the form."""
    try:
        values = [float(value) for value in text.split(",")]
    except ValueError:
        values = []
    if len(values) != len(parts):
        raise ModelSpecError(f"model spec {spec!r}: write one weight per part after '@', comma-separated in the "
                             f"parts' order ({len(parts)} parts), e.g. concat:asset:all-MiniLM-L6-v2+"
                             f"asset:all-mpnet-base-v2@0.25,0.75.")
    try:
        return teacher_weights.normalised(values, parts, where=f"model spec {spec!r}")
    except teacher_weights.TeacherWeightsError as error:
        raise ModelSpecError(str(error)) from None


class ModelLoader:
    """Loads each spec once per run (a concat part also listed on its own is shared)."""

    def __init__(self, context: EncodeContext):
        self.context = context
        self.loaded: dict[str, EvalModel] = {}

    def load(self, spec: str) -> EvalModel:
        spec = spec.strip()
        if spec not in self.loaded:
            self.loaded[spec] = self._load(spec)
        return self.loaded[spec]

    def _load(self, spec: str) -> EvalModel:
        if not spec:
            raise ModelSpecError(f"empty model spec; give one of: {SPEC_FORMS}.")
        if spec.startswith(CONCAT_PREFIX):
            return self._concat(spec)
        if spec.startswith(PCA_PREFIX):
            return self._pca(spec)
        if spec.startswith(ASYMMETRIC_PREFIX):
            return self._asymmetric(spec)
        if spec.startswith(ASSET_PREFIX):
            return self._asset(spec)
        path = Path(spec).expanduser()
        if is_onnx_spec(path):
            return OnnxModel(spec, path, allow_overlap=self.context.allow_overlap, max_length=self.context.max_length)
        return self._folder(spec, path)

    def _concat(self, spec: str) -> EvalModel:
        body, weights_text = concat_weights_text(spec.removeprefix(CONCAT_PREFIX))
        parts = [part.strip() for part in body.split("+")]
        if len(parts) < 2 or not all(parts):
            raise ModelSpecError(f"model spec {spec!r}: concat needs two or more specs joined by '+', e.g. "
                                 f"concat:asset:all-MiniLM-L6-v2+asset:all-mpnet-base-v2.")
        weights = None if weights_text is None else concat_weights(spec, weights_text, parts)
        return ConcatenatedModel(spec, [self.load(part) for part in parts], weights)

    def _pca(self, spec: str) -> EvalModel:
        base, separator, dim = spec.removeprefix(PCA_PREFIX).rpartition("@")
        if not separator or not base or not dim.isdigit():
            raise ModelSpecError(f"model spec {spec!r}: write pca:SPEC@DIM, e.g. pca:asset:all-mpnet-base-v2@128.")
        return PcaModel(spec, self.load(base), int(dim), self.context.pca_fit_texts)

    def _asymmetric(self, spec: str) -> EvalModel:
        query_spec, separator, document_spec = (part.strip() for part in
                                                spec.removeprefix(ASYMMETRIC_PREFIX).partition(ASYMMETRIC_SEPARATOR))
        nested = any(part.startswith(ASYMMETRIC_PREFIX) for part in (query_spec, document_spec))
        if not query_spec or (separator and not document_spec) or nested:
            raise ModelSpecError(f"model spec {spec!r}: write asym:QUERY_SPEC{ASYMMETRIC_SEPARATOR}DOC_SPEC (two "
                                 f"specs that are not asym: themselves), or asym:STUDENT for a student and its "
                                 f"teachers, e.g. 'asym:runs/default/train{ASYMMETRIC_SEPARATOR}concat:asset:"
                                 f"all-MiniLM-L6-v2+asset:all-mpnet-base-v2'.")
        queries = self.load(query_spec)
        resolved_from = ""
        if not separator:
            document_spec = teachers_spec(spec, queries)
            resolved_from = f"the teachers in the manifest of {', '.join(queries.holdout.records_dirs)}"
        return AsymmetricModel(spec, queries, self._document_side(spec, document_spec), resolved_from=resolved_from)

    def _document_side(self, spec: str, document_spec: str) -> EvalModel:
        try:
            return self.load(document_spec)
        except ModelSpecError as error:
            raise ModelSpecError(f"model spec {spec!r}: its documents' model {document_spec!r}: {error}") from error

    def _asset(self, spec: str) -> EvalModel:
        from embed_jax.eval.st_model import SentenceTransformerModel  # torch: only for sentence-transformers specs

        try:
            folder = resolve_model_path(spec)
        except AssetError as error:
            raise ModelSpecError(f"model spec {spec!r}: {error}") from error
        return SentenceTransformerModel(spec, folder, holdout=overlap.external(),
                                        max_length=self.context.max_length)

    def _folder(self, spec: str, folder: Path) -> EvalModel:
        if not folder.is_dir():
            raise ModelSpecError(f"model spec {spec!r}: {folder} is not a folder and not a known spec form. Give one "
                                 f"of: {SPEC_FORMS}.")
        folder = folder.resolve()
        if (folder / "modules.json").is_file():
            return self._sentence_transformers(spec, folder)
        if is_stage_folder(folder):
            return self._stage(spec, folder)
        if stage_folders(folder):
            try:
                return self._stage(spec, choose_stage(folder, None))
            except FileNotFoundError as error:
                raise ModelSpecError(f"model spec {spec!r}: {error}") from error
        hint = (" It looks like a plain Hugging Face model (config.json): give the sentence-transformers folder "
                "around it (modules.json, 1_Pooling) so that its pooling is known."
                if (folder / "config.json").is_file() else "")
        raise ModelSpecError(f"model spec {spec!r}: {folder} holds none of modules.json (sentence-transformers), "
                             f"{STUDENT_CONFIG_FILE} (an embed_jax stage folder) or stage*/{STUDENT_CONFIG_FILE} "
                             f"(an embed_jax workdir).{hint}")

    def _sentence_transformers(self, spec: str, folder: Path) -> EvalModel:
        from embed_jax.eval.st_model import SentenceTransformerModel  # torch: only for sentence-transformers specs

        if (folder / overlap.EXPORT_FILE).is_file():
            holdout = overlap.check_exported_folder(spec, folder, allow_overlap=self.context.allow_overlap)
        else:
            holdout = overlap.external()
        return SentenceTransformerModel(spec, folder, holdout=holdout, max_length=self.context.max_length)

    def _stage(self, spec: str, stage_dir: Path) -> EvalModel:
        holdout = overlap.check_stage_folder(spec, stage_dir, allow_overlap=self.context.allow_overlap)
        return FlaxStudentModel(spec, stage_dir, holdout=holdout, max_length=self.context.max_length)
