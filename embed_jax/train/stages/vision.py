"""Stage 4's own pieces (docs/method.md §4): the student with a vision tower, its image–caption data, and the check that
the caption vectors came from this student's text path.

    text student (a trained text stage folder, model.text_student; or model.init_from with fresh heads)
      + vision tower (model.vision.tower: a SigLIP config.json dict, random; or model.vision.folder: a SigLIP folder)
      + projection pool (model.vision.pool_mode, num_tokens) + placeholder tokens added to the tokenizer
    trains on image–caption records (data.image_records_dir) with target "captions" (embed_jax/train/step.py).

A stage is an image stage when its kind is 'images' (it trains the vision tower: trainable="vision"). `run_vision_stage`
builds its student, records and batches and runs them through the same batch stage as text (stages/batch.py: jitted
step, mesh, checkpoints, driver); it has no periodic held-out loss (embed_jax.eval.zero_shot scores it).

Self-distillation (the paper's stage 4): the caption vectors are the student's own text path's outputs, exported by
`python -m embed_jax.teachers.caption_export`. The export stores a fingerprint of that text path (encoder and heads);
the stage refuses records whose fingerprint differs from the student it trains, since its frozen text path would then
not be the one that made the targets.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from embed_jax import losses
from embed_jax.assets import resolve_model_path
from embed_jax.data import image_records
from embed_jax.data.image_prompt import ImagePrompt, image_prompt_tokens
from embed_jax.data.records import RecordsError
from embed_jax.models import hf_import, siglip
from embed_jax.models.student import Student
from embed_jax.train import batches, driver, sharding, trained_student, workdir
from embed_jax.train.config import StageConfig
from embed_jax.train.console import log
from embed_jax.train.stages import batch as batch_stage, student as stage_student
from embed_jax.train.stages.student import StageResult




def run_vision_stage(config: ml_collections.ConfigDict, stage_name: str, stage: StageConfig, run_dir: Path,
                     previous: StageResult | None) -> StageResult:
    cadence = driver.Cadence.from_config(config.train, stage.num_steps, evaluates=False)
    mesh = stage_student.stage_mesh(config, stage_name, stage, log)
    student = build_vision_student(config, stage_student.stage_heads(config, stage), seed=int(config.seed), mesh=mesh)
    if previous is not None:
        stage_student.restore_previous_stage(previous, student, mesh, log)
    # Opened after the previous stage's weights are in: the caption vectors must be this text path's.
    source = open_image_records(config.data.image_records_dir, student, records_key="data.image_records_dir")
    batch_step = batch_stage.make_batch_step(student, stage, config.optimizer, image_loss_config(config), mesh,
                                             target="captions", stage_name=stage_name)
    return batch_stage.run_batch_stage(
        config, stage_name, run_dir / stage_name, batch_step=batch_step, cadence=cadence, student=student,
        manifest=source.manifest,
        data=make_image_batches(config, source, student, seed=stage.data_seed(config.seed)),
        title=f"{stage_name}: {stage.trainable}")


def image_loss_config(config: ml_collections.ConfigDict) -> losses.LossConfig:
    """Stage 4: every head gets all three terms against its captions' vectors (losses.image_caption_loss)."""
    return losses.LossConfig.from_mapping({**dict(config.loss), "main_head": None, "reduction_target": "teacher"})


# ---------------------------------------------------------------------------------------------------- the student


def image_prompt(config: ml_collections.ConfigDict) -> ImagePrompt:
    return image_prompt_tokens(batches.tokenizer_path(config), int(config.model.vision.num_tokens))


def vision_section(config: ml_collections.ConfigDict, prompt: ImagePrompt) -> dict[str, Any]:
    """`Student.from_pretrained`'s vision argument from model.vision; errors name the key."""
    vision = config.model.vision
    folder, tower = str(vision.folder or ""), vision.tower
    tower = tower.to_dict() if hasattr(tower, "to_dict") else tower
    if bool(folder) == bool(tower):
        raise ValueError("config key model.vision: set exactly one of model.vision.tower (a SigLIP config.json dict, "
                         "trained from scratch) and model.vision.folder (a SigLIP folder to load)")
    if tower:
        check_patch_grid(siglip.config_from_hf({**tower, "model_type": siglip.VISION_MODEL_TYPE},
                                               source="config key model.vision.tower"))
    section = {"pool": {"mode": str(vision.pool_mode), "num_tokens": int(vision.num_tokens)},
               "placeholders": prompt.placeholders}
    section.update({"folder": folder} if folder else {"tower": dict(tower)})
    return section


def check_patch_grid(tower: siglip.SiglipVisionConfig) -> None:
    """A tower trained here (model.vision.tower) must tile its images with whole patches: with a remainder the
    'valid' patch convolution never sees the border pixels, and they have no effect. (A published folder may do so
    on purpose: siglip-so400m-patch14-384 drops 6 pixels, and its weights were trained that way; it is loaded as is.)"""
    remainder = tower.image_size % tower.patch_size
    if remainder:
        lower = tower.image_size - remainder
        raise ValueError(
            f"config key model.vision.tower: image_size={tower.image_size} is not a multiple of "
            f"patch_size={tower.patch_size}; the last {remainder} pixel rows and columns would reach no patch. Use "
            f"image_size={lower} or {lower + tower.patch_size}, or a patch_size that divides {tower.image_size}.")


def build_vision_student(config: ml_collections.ConfigDict, heads: Mapping[str, Any], *, seed: int,
                         mesh: jax.sharding.Mesh) -> Student:
    """The stage-4 student: text path from model.text_student (its trained weights) or model.init_from (fresh heads,
    for a run whose earlier stages fill them in), plus the vision tower, pool and placeholders.
    """
    prompt = image_prompt(config)
    vision = vision_section(config, prompt)
    dtype, param_dtype = jnp.dtype(config.model.dtype), jnp.dtype(config.model.param_dtype)
    text_student = str(config.model.text_student or "")
    if not text_student:
        return Student.from_pretrained(
            resolve_model_path(config.model.init_from), heads=dict(heads), vision=vision,
            pooling_method=config.model.pooling or None, dtype=dtype, param_dtype=param_dtype,
            text_options=dict(config.model.text_options), rngs=nnx.Rngs(seed))
    text_config = workdir.read_student_config(text_student, key="model.text_student")
    tower = None
    if "folder" in vision:
        tower, tower_config = siglip.load(vision.pop("folder"), dtype=dtype, param_dtype=param_dtype)
        vision["tower"] = {**tower_config, "model_type": siglip.VISION_MODEL_TYPE}
    student_config = {**text_config, "vision": vision, "dtype": jnp.dtype(dtype).name,
                      "param_dtype": jnp.dtype(param_dtype).name}
    student = Student.from_config(student_config, rngs=nnx.Rngs(seed))
    trained = trained_student.restore_stage_params(workdir.absolute_workdir(text_student), text_config, mesh)
    copy_text_path(student, trained)
    if tower is not None:
        nnx.update(student.vision, nnx.state(tower, nnx.Param))
    if student.added_embeddings is not None and "added_embeddings" not in trained:
        init_added_embeddings_at_mean(student)
    return student


def abstract_vision_student(config: ml_collections.ConfigDict, stage: StageConfig, hf_config: Mapping[str, Any]
                            ) -> tuple[Student, ImagePrompt]:
    """`build_vision_student`'s student as shapes only (no weights read), and its image prompt: what the TPU plan
    compiles (embed_jax/plan/). The text path's architecture is model.text_student's student config, else the
    encoder of `hf_config` with the stage's heads; a model.vision.folder contributes its config.json alone. The
    prompt needs the tokenizer (data.tokenizer or model.init_from): its placeholder ids are the tokenizer's."""
    prompt = image_prompt(config)
    vision = vision_section(config, prompt)
    if "folder" in vision:
        folder = hf_import.resolve_model_folder(vision.pop("folder"))
        vision["tower"] = {**siglip.vision_config_dict(hf_import.read_config(folder), source=str(folder)),
                           "model_type": siglip.VISION_MODEL_TYPE}
    text_student = str(config.model.text_student or "")
    text_config = (workdir.read_student_config(text_student, key="model.text_student") if text_student
                   else stage_student.student_config(config, stage, dict(hf_config)))
    student_config = {**text_config, "vision": vision, "dtype": config.model.dtype,
                      "param_dtype": config.model.param_dtype}
    return nnx.eval_shape(lambda: Student.from_config(student_config, rngs=nnx.Rngs(0))), prompt


def copy_text_path(student: Student, trained: nnx.State) -> None:
    """Every text-path parameter of `trained` into the student; a missing or mis-shaped one is an error."""
    target = dict(nnx.to_flat_state(nnx.state(student, nnx.Param)))
    source = dict(nnx.to_flat_state(trained))
    problems = []
    for path, variable in target.items():
        if path[0] not in trained_student.TEXT_PATH_ROOTS + ("added_embeddings",):
            continue
        if path not in source:
            if path[0] != "added_embeddings":
                problems.append(f"{'/'.join(map(str, path))} missing")
            continue
        value = source[path].get_value()
        if value.shape != variable.get_value().shape:
            problems.append(f"{'/'.join(map(str, path))}: {value.shape} vs {variable.get_value().shape}")
            continue
        variable.set_value(value)
    if problems:
        raise ValueError("model.text_student does not fit the student this config builds: " + "; ".join(problems))


def init_added_embeddings_at_mean(student: Student) -> None:
    """Placeholder rows start at the word-embedding table's mean (Hugging Face's mean_resizing, as
    `Student.from_pretrained` does); they stay frozen in stage 4."""
    table = student.text_encoder.embed_tokens(jnp.arange(student.vocab_size))
    mean = jnp.mean(table.astype(jnp.float32), axis=0)
    rows = student.added_embeddings.embedding
    rows[...] = jnp.broadcast_to(mean, rows[...].shape).astype(rows[...].dtype)


# ---------------------------------------------------------------------------------------------------- fingerprint


def check_caption_source(student: Student, manifest, *, records_key: str) -> None:
    """Records made by a student's text path (fingerprint 'text-path:…') must come from this student's text path."""
    stored = manifest.teachers[0].weights_sha256
    if not stored.startswith(trained_student.FINGERPRINT_PREFIX) or jax.process_count() > 1:
        return  # vectors of a text teacher folder (nothing to compare), or a multi-host run (params not addressable)
    if trained_student.text_path_fingerprint(student) != stored:
        raise RecordsError(
            f"{records_key}: the caption vectors were made by the text path of {manifest.teachers[0].path}, which is "
            "not this student's text path (encoder and heads differ). Stage 4 aligns images with the captions' "
            "vectors of the frozen text path it trains through: set model.text_student to that folder, or export "
            "the captions again from this student's text path.")


# ---------------------------------------------------------------------------------------------------- data


def open_image_records(folder: str, student: Student, *, records_key: str) -> image_records.ImageRecordSource:
    if not folder:
        raise ValueError(f"config key {records_key} is empty: an image stage trains on image–caption records "
                         "(python -m embed_jax.teachers.caption_export)")
    source = image_records.ImageRecordSource(folder)
    image_records.check_heads_for_training(source.manifest, student.heads.dims, records_key=records_key)
    check_caption_source(student, source.manifest, records_key=records_key)
    return source


def make_image_batches(config: ml_collections.ConfigDict, source: image_records.ImageRecordSource,
                       student: Student, *, seed: int, shuffle: bool = True, num_epochs: int | None = None):
    return image_records.make_image_dataset(
        source, settings=trained_student.image_settings(student), prompt=image_prompt(config),
        global_batch_size=int(config.data.global_batch_size), seed=seed, shuffle=shuffle, num_epochs=num_epochs,
        process_index=jax.process_index(), process_count=jax.process_count())
