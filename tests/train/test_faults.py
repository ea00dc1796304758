"""Faults around a training run, through `exits.run` (what embed_jax.main runs): a workdir that cannot be written,
a disk that fills up while training, a SIGTERM between stages. Each ends with one line and its exit status."""
import errno
import io
import os
import signal

import pytest

from embed_jax.train import exits, loop
from embed_jax.train.metrics import read_metrics

# Slow lane only (docs/testing.md, "Fast lane"): compiles, exports or trains whole models.
pytestmark = pytest.mark.slow


def run(config, workdir):
    stderr = io.StringIO()
    status = exits.run(config, workdir, stderr=stderr)
    return status, stderr.getvalue().strip().splitlines()


def test_a_file_at_the_workdir_is_one_line_naming_it(smoke_config, tmp_path):
    workdir = tmp_path / "taken"
    workdir.write_text("not a folder")
    status, lines = run(smoke_config, workdir)
    assert status == exits.FAULT and lines == [
        f"error: cannot write {workdir}: a file, not a folder, is in the way of --workdir (ENOTDIR); a file is in "
        "the way (a path component is a file, not a folder): move it, or choose another --workdir"]
    status, lines = run(smoke_config, workdir / "run")  # a folder under that file
    assert status == exits.FAULT and len(lines) == 1 and f"cannot write {workdir / 'run'}" in lines[0]


def test_a_read_only_workdir_is_one_line_naming_it(smoke_config, tmp_path, monkeypatch):
    """Tests run as root, for whom chmod does not stop a write: the folder's creation is made to fail as a read-only
    mount fails it (EROFS, from os.mkdir)."""
    workdir = tmp_path / "readonly" / "run"

    def read_only_mkdir(path, mode=0o777):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    monkeypatch.setattr(os, "mkdir", read_only_mkdir)
    status, lines = run(smoke_config, workdir)
    assert status == exits.FAULT and lines == [
        f"error: cannot write {workdir}: Read-only file system (EROFS); the file system is read-only: choose a "
        "--workdir on a writable disk"]


def test_a_full_disk_while_training_is_one_line_naming_the_file(smoke_config, tmp_path):
    """metrics.jsonl is a link to /dev/full, where every write fails with ENOSPC, as on a full disk."""
    smoke_config.stage_order = ("stage1",)
    metrics_file = tmp_path / "stage1" / "metrics.jsonl"
    metrics_file.parent.mkdir(parents=True)
    metrics_file.symlink_to("/dev/full")
    status, lines = run(smoke_config, tmp_path)
    assert status == exits.FAULT
    assert lines[-1] == (f"error: cannot write {metrics_file}: No space left on device (ENOSPC); the disk is full: "
                         "free space there, then rerun the same command (it resumes from the last committed "
                         "checkpoint)")


def test_sigterm_between_stages_says_what_is_kept_and_exits_143(smoke_config, tmp_path, monkeypatch):
    smoke_config.stage_order = ("stage1", "stage2")
    run_stage = loop.run_stage

    def run_stage_then_sigterm(config, stage_name, run_dir, previous):
        result = run_stage(config, stage_name, run_dir, previous)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives after stage1's last save, before stage2 starts
        return result

    monkeypatch.setattr(loop, "run_stage", run_stage_then_sigterm)
    status, lines = run(smoke_config, tmp_path)
    assert status == 143
    assert lines[-1].startswith("[main] stopped before stage2 on SIGTERM: stage1 is finished and saved (step 3); "
                                "rerun the same command to continue with stage2")
    assert not (tmp_path / "stage2").exists()
    monkeypatch.setattr(loop, "run_stage", run_stage)
    status, _ = run(smoke_config, tmp_path)  # the same command continues with stage2
    assert status == exits.FINISHED
    assert [row["step"] for row in read_metrics(tmp_path / "stage1" / "metrics.jsonl")] == [1, 2, 3]
    assert [row["step"] for row in read_metrics(tmp_path / "stage2" / "metrics.jsonl")] == [1, 2, 3]


def test_a_non_finite_loss_names_its_records_and_exits_1(smoke_config, tmp_path):
    smoke_config.stage_order = ("stage1",)
    smoke_config.stage1.kind = "records"  # the encoder's step, whose batches carry their record ids
    smoke_config.stage1.num_steps = 6
    smoke_config.stage1.learning_rate = 1e38  # the first update overflows FC1 to inf
    smoke_config.optimizer.clip_norm = 0.0
    smoke_config.optimizer.warmup_fraction = 0.0
    status, lines = run(smoke_config, tmp_path)
    assert status == exits.FAULT
    assert "step 2: loss term" in lines[-1] and "held records" in lines[-1]
    assert "the last good checkpoint is none yet" in lines[-1]



def folder_bytes(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_sentence_transformers_folder_as_workdir_is_refused_and_left_untouched(smoke_config, tmp_path):
    """An exported model folder given as --workdir: training would replace its config.json with the run config,
    after which sentence-transformers can no longer load it."""
    import shutil

    from embed_jax.assets import minilm_path

    model = tmp_path / "exported"
    shutil.copytree(minilm_path(), model)
    before = folder_bytes(model)
    status, lines = run(smoke_config, model)
    assert status == exits.BAD_INPUT and lines == [
        f"error: --workdir={model} holds a sentence-transformers model (modules.json, config.json), not an embed_jax "
        "training run: training would overwrite its config.json. Choose an empty or new folder for --workdir"]
    assert folder_bytes(model) == before


def test_the_init_from_folder_as_workdir_is_refused_and_left_untouched(smoke_config, tmp_path):
    import shutil

    student = tmp_path / "student"
    shutil.copytree(smoke_config.model.init_from, student)
    smoke_config.model.init_from = str(student)
    before = folder_bytes(student)
    status, lines = run(smoke_config, student)
    assert status == exits.BAD_INPUT and len(lines) == 1
    assert lines[0].startswith(f"error: --workdir={student} holds a Hugging Face model (config.json with model_type "
                               "'bert'), not an embed_jax training run")
    assert "It is this run's --config.model.init_from." in lines[0]
    assert folder_bytes(student) == before


def test_a_foreign_folder_or_another_runs_workdir_is_refused_naming_what_it_holds(smoke_config, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    status, lines = run(smoke_config, foreign)
    assert status == exits.BAD_INPUT and lines == [
        f"error: --workdir={foreign} is not empty and holds no embed_jax run (config.json is missing); it holds "
        "notes.txt. Choose an empty or new folder for --workdir (a records folder may sit in it as records/)"]
    (foreign / "config.json").write_text('{"learning_rate": 1}')  # someone else's config.json
    status, lines = run(smoke_config, foreign)
    assert status == exits.BAD_INPUT and "holds a config.json that no embed_jax training run wrote" in lines[0]
    assert (foreign / "config.json").read_text() == '{"learning_rate": 1}'

    smoke_config.stage_order = ("stage1",)
    assert run(smoke_config, tmp_path / "run")[0] == exits.FINISHED
    run_config = (tmp_path / "run" / "config.json").read_bytes()
    smoke_config.seed = 7
    status, lines = run(smoke_config, tmp_path / "run")
    assert status == exits.BAD_INPUT and lines == [
        f"error: --workdir={tmp_path / 'run'} holds an embed_jax run of another identity (seed: workdir 0, this run "
        "7): training would overwrite its config.json and mix its checkpoints. Rerun with the workdir's values to "
        "resume it, or choose an empty or new folder for --workdir"]
    assert (tmp_path / "run" / "config.json").read_bytes() == run_config


def test_a_value_error_from_inside_a_library_is_a_fault_with_its_traceback_not_bad_input(smoke_config, tmp_path,
                                                                                         monkeypatch):
    """Exit 2 says the user's input was refused; a ValueError raised inside a library (here numpy's reshape, as
    tensorstore's under an Orbax save) is a fault to report, so it keeps its traceback (exit 1 from Python)."""
    import numpy as np
    import pytest

    def stage_that_hits_a_library_error(config, stage_name, run_dir, previous):
        np.reshape(np.zeros(3), (2,))

    monkeypatch.setattr(loop, "run_stage", stage_that_hits_a_library_error)
    with pytest.raises(ValueError, match="cannot reshape"):
        run(smoke_config, tmp_path / "run")
