"""The training loop: stages run one after another, each resumable, on one CPU, one GPU or a TPU slice alike.

    for each stage in config.stage_order (workdir/<stage>/):
        student  = the init folder's encoder + this stage's heads, with the previous stage's trained weights
        resume   from the stage's latest checkpoint if there is one (same or different mesh)
        for step:  global batch → jit train step (sharded over the mesh) → metrics → checkpoint → preemption check
        the stage's last checkpoint holds the full student: the next stage, export and eval start from it

A stage is one of three kinds, each a module that supplies what differs and runs through the one step driver
(embed_jax/train/driver.py): a text stage (text_stage.py), a heads-only stage from cached pooled vectors
(cached_stage.py, stage.cached_pooled=True), an image stage (vision_stage.py, trainable="vision"). The run folder's
layout is embed_jax/train/workdir.py's. Every process runs this same code; each reads its own slice of the records,
and the loss sees the global batch.
"""
from __future__ import annotations

from pathlib import Path

import jax
import ml_collections

from embed_jax.train import cached_stage, text_stage, vision_stage, workdir
from embed_jax.train.train_state import StageResult


def run_stage(config: ml_collections.ConfigDict, stage_name: str, run_dir: Path,
              previous: StageResult | None) -> StageResult:
    stage = config[stage_name]
    if stage.get(cached_stage.CONFIG_KEY, False):
        return cached_stage.run_cached_stage(config, stage_name, run_dir, previous)
    if vision_stage.is_image_stage(stage):
        return vision_stage.run_vision_stage(config, stage_name, run_dir, previous)
    return text_stage.run_text_stage(config, stage_name, run_dir, previous)


def train_and_evaluate(config: ml_collections.ConfigDict, run_dir: str | Path) -> list[StageResult]:
    run_dir = workdir.absolute_workdir(run_dir)
    if jax.process_index() == 0:  # every process runs this; one writes the run's files
        workdir.write_run_config(config.to_dict(), run_dir)
    results: list[StageResult] = []
    previous = None
    for stage_name in config.stage_order:
        if stage_name not in config:
            raise ValueError(f"config key stage_order names {stage_name!r}, but the config has no such section; "
                             f"sections: {sorted(key for key in config.keys() if key.startswith('stage'))}")
        previous = run_stage(config, stage_name, run_dir, previous)
        results.append(previous)
    return results
