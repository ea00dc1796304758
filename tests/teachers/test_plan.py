"""`--config.dry_run=True`: the plan printed before anything is spent, and nothing written."""
import re

from embed_jax.teachers import export, plan


def test_dry_run_prints_the_plan_and_writes_nothing(make_config, corpus_file, tmp_path, capsys):
    folder = tmp_path / "out"
    config = make_config(folder, corpus_file, dry_run=True, num_workers=4, worker_index=0, dry_run_texts=6)
    assert export.run_export(config) is None
    assert not folder.exists()
    err = capsys.readouterr().err
    assert "dry run: nothing written to" in err
    assert "texts: 15 (2 empty skipped) in 4 shards of 4" in err
    assert "target: 416-d (384 + 32)" in err
    assert re.search(r"teacher minilm: 384-d on cpu in float32, [0-9.]+ texts/s over 6 sample texts", err)
    assert re.search(r"ETA at 1 worker: \d+m\d\ds", err) and re.search(r"ETA at 4 workers: \d+m\d\ds", err)


def test_planned_bytes_are_the_bytes_an_export_writes(make_config, corpus_file, tmp_path, capsys):
    config = make_config(tmp_path / "out", corpus_file, storage_dtype="float16")
    settings = export.settings_from_config(config)
    from embed_jax.data import sources
    from embed_jax.teachers import encoders

    teachers = [encoders.load_teacher(spec) for spec in settings.teacher_specs]
    planned = plan.make_plan(sources.open_corpus(config.corpus), teachers, settings)
    export.run_export(config)
    written = sum(path.stat().st_size for path in (tmp_path / "out").glob("*.array_record"))
    assert planned.num_texts == 15 and planned.teacher_dim == 416
    # ArrayRecord writes whole 64 KiB blocks: the plan may miss by a block per shard at most.
    assert abs(written - planned.bytes_on_disk) <= plan.ARRAY_RECORD_BLOCK * planned.num_shards
