"""The run folder's paths: local ones made absolute, Cloud Storage ones kept whole (pathlib would give gs:/...)."""
from pathlib import Path

from embed_jax.train import workdir


def test_a_cloud_workdir_keeps_its_scheme_through_every_join():
    run = workdir.absolute_workdir("gs://bucket/runs/a")
    assert str(run / "stage1" / workdir.CHECKPOINTS_DIR) == "gs://bucket/runs/a/stage1/checkpoints"


def test_a_local_workdir_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert workdir.absolute_workdir("runs/a") == tmp_path / "runs" / "a"


def test_the_run_config_keeps_cloud_folders_and_resolves_local_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = workdir.run_config_values({"data": {"records_dir": "gs://b/records, local", "eval_records_dir": ""}})
    assert values["data"] == {"records_dir": f"gs://b/records,{tmp_path / 'local'}", "eval_records_dir": ""}


def test_stage_discovery_and_choice_name_what_the_workdir_holds(tmp_path):
    for name, steps in (("stage1", [10]), ("stage2", []), ("stage10", [5])):
        workdir.write_student_config(tmp_path / name, {"heads": {}})
        for step in steps:
            (tmp_path / name / workdir.CHECKPOINTS_DIR / str(step)).mkdir(parents=True)
    assert [path.name for path in workdir.stage_folders(tmp_path)] == ["stage1", "stage2", "stage10"]
    assert workdir.choose_stage(tmp_path, None) == tmp_path / "stage10"
    try:
        workdir.choose_stage(tmp_path, "stage2")
    except FileNotFoundError as error:
        assert "trained stages: stage1, stage10" in str(error)
    else:
        raise AssertionError("an untrained stage was chosen")
    assert workdir.read_student_config(tmp_path / "stage1") == {"heads": {}}
    assert not workdir.is_stage_folder(Path(tmp_path))


def test_stage_paths_built_here_keep_a_cloud_scheme():
    assert str(workdir.as_path("gs://bucket/run/stage1") / workdir.STUDENT_CONFIG_FILE) == \
        "gs://bucket/run/stage1/student_config.json"


def test_stages_come_in_the_run_configs_order_whatever_their_names(tmp_path):
    """A heads-only stage named stage3_heads runs before stage3: the last stage is stage3, not the longer name."""
    for name in ("stage1", "stage2", "stage3_heads", "stage3"):
        workdir.write_student_config(tmp_path / name, {"heads": {}})
        (tmp_path / name / workdir.CHECKPOINTS_DIR / "10").mkdir(parents=True)
    assert workdir.choose_stage(tmp_path, None) == tmp_path / "stage3_heads"  # no run config: by name
    workdir.write_run_config({"stage_order": ["stage1", "stage2", "stage3_heads", "stage3"]}, tmp_path)
    assert [path.name for path in workdir.stage_folders(tmp_path)] == ["stage1", "stage2", "stage3_heads", "stage3"]
    assert workdir.choose_stage(tmp_path, None) == tmp_path / "stage3"


def test_each_process_probes_with_its_own_file_and_leaves_none(tmp_path):
    """Every host of a run probes the workdir at once: with one shared probe name, one process's unlink took the file
    from under another's (FileNotFoundError in the two-process test). Another process's probe, caught mid-probe,
    is not mistaken for a foreign file."""
    workdir.make_workdir(tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == []
    (tmp_path / "run" / f"{workdir.PROBE_PREFIX}otherhost.12345").write_bytes(b"")
    workdir.check_workdir_is_ours(tmp_path / "run", {"model": {"init_from": "x"}})  # no refusal
