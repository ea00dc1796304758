"""`--config.dry_run=True`: the plan printed before anything is spent, and nothing written."""
import dataclasses
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


def test_the_eta_at_more_workers_than_shards_is_one_shards_time():
    """Worker k writes shards k, k + N, ...: with one shard, four workers take as long as one."""
    one_shard = plan.ExportPlan(num_texts=100, skipped_empty=0, num_shards=1, shard_size=1024, teacher_dim=8,
                                bytes_on_disk=0, rates={"t": 2.0}, worker_rate=2.0, num_workers=4)
    assert one_shard.eta_seconds(4) == one_shard.eta_seconds(1) == 50.0
    five_shards = dataclasses.replace(one_shard, num_texts=4100, num_shards=5)  # 4 full shards and 4 texts
    assert five_shards.eta_seconds(1) == 2050.0
    assert five_shards.eta_seconds(4) == (1024 + 4) / 2.0  # worker 0 writes shards 0 and 4
    assert five_shards.busy_workers(8) == 5


def test_the_plan_says_when_workers_would_have_no_shard(make_config, corpus_file, tmp_path, capsys):
    config = make_config(tmp_path / "out", corpus_file, dry_run=True, num_workers=8, worker_index=0,
                         dry_run_texts=6)
    export.run_export(config)
    assert re.search(r"ETA at 8 workers: \d+m\d\ds \(4 shards: 4 of the workers would have none\)",
                     capsys.readouterr().err)
