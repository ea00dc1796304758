"""A stage's checkpoints: its folder refuses another run's (identity) or other shapes (shape config), and a rerun
resumes from the latest, the data iterator moved with it (embed_jax/train/checkpoint.py, workdir.py's layout).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_collections
from flax import nnx

from embed_jax.data import records
from embed_jax.models.student import Student
from embed_jax.train import checkpoint, sharding, workdir
from embed_jax.train.console import log
from embed_jax.train.train_state import TrainState, param_state
from embed_jax.train.trainable import count_encoder_layers, split_trainable


def shape_config(student: Student, manifest: records.Manifest) -> dict[str, Any]:
    """The values that fix the checkpoint's array shapes: a resume that changes one is refused, naming it."""
    return {
        "hidden_size": int(student.hidden_size),
        "head_dims": [int(dim) for dim in student.heads.dims],
        "teacher_dim": int(manifest.teacher_dim),
        "text_encoder": student.config["text_encoder"].get("model_type"),
        "num_layers": count_encoder_layers([path for path, _ in nnx.to_flat_state(param_state(student))]),
    }


def stage_checkpoints(config: ml_collections.ConfigDict, stage_name: str, stage_dir: Path, student: Student,
                      manifest: records.Manifest) -> checkpoint.CheckpointManager:
    """The stage's checkpoint folder, refusing another run's (identity) or other shapes (shape config)."""
    return checkpoint.CheckpointManager(
        stage_dir / workdir.CHECKPOINTS_DIR,
        save_every=int(config.train.checkpoint_every),
        keep=int(config.train.keep_checkpoints),
        identity=workdir.run_identity(config, stage_name, manifest),
        shape_config=shape_config(student, manifest),
    )


def resume_latest(manager: checkpoint.CheckpointManager, student: Student, state: TrainState,
                  mesh: jax.sharding.Mesh, data_iterator: Any = None, *, stage_name: str) -> int:
    """The stage's latest checkpoint loaded into `student` and `state` (and the iterator moved); its step, 0 if none."""
    if manager.latest_step() is None:
        return 0
    full_sharding = sharding.state_sharding(param_state(student), mesh)
    targets = {
        workdir.PARAMS_ITEM: checkpoint.abstract_with_shardings(param_state(student), full_sharding),
        workdir.OPT_STATE_ITEM: checkpoint.abstract_with_shardings(state.opt_state, state.opt_state_sharding),
    }
    restored = manager.restore(None, targets, data_iterator)
    nnx.update(student, restored.state[workdir.PARAMS_ITEM])
    state.graphdef, trainable, frozen = split_trainable(student, state.select)
    state.trainable = jax.device_put(trainable, state.trainable_sharding)
    state.frozen = jax.device_put(frozen, state.frozen_sharding)
    state.opt_state = restored.state[workdir.OPT_STATE_ITEM]
    log(f"[{stage_name}] resumed from step {restored.step} in {manager.directory}")
    return restored.step
