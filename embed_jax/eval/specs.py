"""--model specs → loaded models.

    asset:all-MiniLM-L6-v2 | asset:all-mpnet-base-v2   a bundled teacher (sentence-transformers)
    FOLDER with modules.json                           any sentence-transformers folder, embed_jax exports included
    FOLDER with student_config.json                    a stage folder of embed_jax.main (Flax)
    WORKDIR with stage*/student_config.json            its last trained stage (as the exporter picks it)
    concat:SPEC+SPEC[+...]                             the concatenated teacher (SPEC §2)
    pca:SPEC@DIM                                       SPEC reduced to DIM by PCA (baseline)

The hold-out check (overlap.py) runs while loading: a model whose training records contain hold-out material stops
here, before any encoding.
"""
from __future__ import annotations

from pathlib import Path

from embed_jax.eval import overlap
from embed_jax.eval.derived import ConcatenatedModel, PcaModel
from embed_jax.eval.encoding import EncodeContext, EvalModel, ModelSpecError
from embed_jax.eval.flax_model import FlaxStudentModel
from embed_jax.assets import AssetError, resolve_model_path
from embed_jax.train.workdir import STUDENT_CONFIG_FILE, choose_stage, is_stage_folder, stage_folders

CONCAT_PREFIX, PCA_PREFIX, ASSET_PREFIX = "concat:", "pca:", "asset:"
SPEC_FORMS = ("asset:all-MiniLM-L6-v2, asset:all-mpnet-base-v2, a sentence-transformers folder (modules.json), an "
              "embed_jax stage folder (student_config.json) or workdir (stage*/), concat:SPEC+SPEC, pca:SPEC@DIM")


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
        if spec.startswith(ASSET_PREFIX):
            return self._asset(spec)
        return self._folder(spec, Path(spec).expanduser())

    def _concat(self, spec: str) -> EvalModel:
        parts = [part.strip() for part in spec.removeprefix(CONCAT_PREFIX).split("+")]
        if len(parts) < 2 or not all(parts):
            raise ModelSpecError(f"model spec {spec!r}: concat needs two or more specs joined by '+', e.g. "
                                 f"concat:asset:all-MiniLM-L6-v2+asset:all-mpnet-base-v2.")
        return ConcatenatedModel(spec, [self.load(part) for part in parts])

    def _pca(self, spec: str) -> EvalModel:
        base, separator, dim = spec.removeprefix(PCA_PREFIX).rpartition("@")
        if not separator or not base or not dim.isdigit():
            raise ModelSpecError(f"model spec {spec!r}: write pca:SPEC@DIM, e.g. pca:asset:all-mpnet-base-v2@128.")
        return PcaModel(spec, self.load(base), int(dim), self.context.pca_fit_texts)

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
