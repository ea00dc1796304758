"""Every config value no run can train with is refused before any work, in one line naming the key, the stage and
the fix (embed_jax/train/preflight.py); records that cannot train are refused naming the folder."""
import dataclasses
import json
import shutil
from pathlib import Path

import kit
import pytest

from embed_jax.data import records
from embed_jax.data.pipeline import PipelineConfigError
from embed_jax.data.records import RecordsError
from embed_jax.train import batches, config as train_config, preflight


@pytest.mark.parametrize("key,value,message", [
    ("train.log_every", 0, r"train.log_every=0: every stage logs"),
    ("train.checkpoint_every", 0, r"train.checkpoint_every=0: every stage saves"),
    ("stage1.num_steps", 0, r"stage1.num_steps=0: stage stage1 must train at least one step"),
    ("stage2.learning_rate", -1e-4, r"stage2.learning_rate=-0.0001: stage stage2's peak learning rate must be "
                                    r"a positive number"),
    ("data.global_batch_size", 0, r"data.global_batch_size=0: every stage's step reads"),
    ("data.global_batch_size", -8, r"data.global_batch_size=-8: .* must be a whole number ≥ 1"),
    ("data.group_by", "topic", r"data.group_by='topic': use one of \['length', 'teacher'\]"),
    ("stage1.mesh", "data=2,fsdq=4", r"stage1.mesh='data=2,fsdq=4': write the mesh as data=D,fsdp=F"),
    ("stage2.mesh", "data=3", r"config stage2.mesh: .* needs 3 devices but 8 are available.*stage stage2 trains on "
                              r"its own mesh"),
])
def test_bad_values_name_the_key_and_the_stage(key, value, message):
    config = kit.load_config_file("distill", "smoke")
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(preflight.ConfigError, match=message):
        preflight.check_config(config)


def test_max_length_beyond_the_position_table_is_refused_naming_the_limit(tiny_student):
    config = kit.load_config_file("distill", "smoke")
    config.model.init_from = str(tiny_student)  # max_position_embeddings=64
    config.data.max_length, config.data.length_buckets = 128, (64, 128)
    with pytest.raises(preflight.ConfigError, match=r"data.max_length=128 \(stages stage1, stage2, stage3_heads, "
                                                    r"stage3_pairs\).* "
                                                    r"has 64 positions.*data.max_length=64 or less"):
        preflight.check_config(config)


@pytest.mark.parametrize("hf_config,limit", [
    ({"model_type": "bert", "max_position_embeddings": 512}, 512),
    ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),  # positions from pad + 1
    ({"model_type": "gpt2", "n_positions": 1024}, 1024),
])
def test_position_limit_of_each_family(hf_config, limit):
    base = {"vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 16, "n_embd": 8, "n_layer": 1, "n_head": 2}
    assert preflight.position_limit({**base, **hf_config}, "config.json") == limit


def test_vision_image_size_not_a_multiple_of_the_patch_size_is_refused():
    config = kit.load_config_file("vision", "smoke")
    config.model.vision.tower.image_size, config.model.vision.tower.patch_size = 30, 8
    with pytest.raises(ValueError, match=r"model.vision.tower: image_size=30 is not a multiple of patch_size=8; the "
                                         r"last 6 pixel rows.*image_size=24 or 32"):
        preflight.check_config(config)


def test_records_folder_with_no_record_is_refused_naming_it(smoke_config, teacher_records, tmp_path):
    empty = tmp_path / "empty_records"
    empty.mkdir()
    manifest = json.loads((teacher_records / records.MANIFEST_NAME).read_text())
    manifest.update(shards=[], num_records=0)
    (empty / records.MANIFEST_NAME).write_text(json.dumps(manifest))
    smoke_config.data.records_dir = str(empty)
    with pytest.raises(RecordsError, match=rf"config key data.records_dir: {empty} holds 0 records"):
        preflight.check_config(smoke_config)


def two_teacher_manifest(order: tuple[str, str], normalisation: str = "per_teacher_l2") -> records.Manifest:
    teachers = {"minilm": 384, "mpnet": 768}
    return records.Manifest(
        schema_version=records.SCHEMA_VERSION, export_id="x", status=records.STATUS_COMPLETE,
        teachers=tuple(records.TeacherInfo(name=name, path=f"/models/{name}", dim=teachers[name], pooling="mean",
                                           prompt="", max_seq_length=128, weights_sha256=f"sha-{name}", order=index)
                       for index, name in enumerate(order)),
        teacher_dim=1152, dtype="float16", normalisation=normalisation, corpus={}, shard_size=32)


def test_held_out_records_of_another_teacher_order_are_refused():
    train = two_teacher_manifest(("minilm", "mpnet"))
    batches.check_same_teachers(train, dataclasses.replace(train, dtype="float32", export_id="y"),
                                train_key="data.records_dir", held_out_key="data.eval_records_dir")
    with pytest.raises(PipelineConfigError, match=r"data.eval_records_dir: .*teachers in order: training "
                                                  r"\[minilm 384, mpnet 768\], held-out \[mpnet 768, minilm 384\]"):
        batches.check_same_teachers(train, two_teacher_manifest(("mpnet", "minilm")), train_key="data.records_dir",
                                    held_out_key="data.eval_records_dir")
    with pytest.raises(PipelineConfigError, match=r"normalisation: training 'per_teacher_l2', held-out 'none'"):
        batches.check_same_teachers(train, two_teacher_manifest(("minilm", "mpnet"), "none"),
                                    train_key="data.records_dir", held_out_key="data.eval_records_dir")
    other_weights = dataclasses.replace(train, teachers=(
        train.teachers[0], dataclasses.replace(train.teachers[1], weights_sha256="sha-other")))
    with pytest.raises(PipelineConfigError, match=r"mpnet weights_sha256: training 'sha-mpnet', held-out"):
        batches.check_same_teachers(train, other_weights, train_key="data.records_dir",
                                    held_out_key="data.eval_records_dir")


def test_held_out_records_are_checked_before_any_work(smoke_config, teacher_records, tmp_path):
    """The check runs from preflight on the real folders: an eval folder whose manifest says its teacher pooled
    otherwise is refused (an edited copy: its sidecars still agree, since they share the edit)."""
    held_out = tmp_path / "held_out"
    shutil.copytree(teacher_records, held_out)
    for path in held_out.glob("*.json"):
        data = json.loads(path.read_text())
        for teacher in data.get("teachers", []):
            teacher["pooling"] = "cls"
        path.write_text(json.dumps(data))
    smoke_config.data.eval_records_dir, smoke_config.train.eval_every = str(held_out), 1
    with pytest.raises(PipelineConfigError, match=r"data.eval_records_dir.*minilm pooling: training 'auto', "
                                                  r"held-out 'cls'"):
        preflight.check_config(smoke_config)


def held_out_config(smoke_config, eval_records):
    smoke_config.data.eval_records_dir, smoke_config.train.eval_every = str(eval_records), 1
    return smoke_config


def test_held_out_records_that_repeat_training_records_are_refused(smoke_config, teacher_records,
                                                                  overlapping_eval_records):
    held_out_config(smoke_config, overlapping_eval_records)
    with pytest.raises(PipelineConfigError, match=(
            rf"config key data.eval_records_dir: 16 of the 16 records in {overlapping_eval_records} repeat records "
            rf"of the training records in {teacher_records} \(data.records_dir\) \(16 the same id, 0 the same text "
            r"under another id\), e.g. 'wordnet:.*:definition'.*Export the validation records from a slice of the "
            r"corpus the training records do not hold \(.*--config.corpus.skip_texts=100000")):
        preflight.check_config(smoke_config)


def export_text_lines(folder, lines):
    """MiniLM records of `lines`, one text per line of validation.txt (ids validation.txt:N)."""
    from embed_jax.teachers import export

    corpus = folder / "validation.txt"
    folder.mkdir(parents=True, exist_ok=True)
    corpus.write_text("".join(f"{line}\n" for line in lines))
    config = kit.minilm_export_config(folder / "records")
    config.corpus.kind, config.corpus.paths = "text", str(corpus)
    export.run_export(config)
    return folder / "records"


def test_held_out_records_repeating_many_training_texts_under_other_ids_are_refused(smoke_config, teacher_records,
                                                                                   tmp_path):
    repeated = batches.open_records(smoke_config, str(teacher_records), "data.records_dir")[5]["text"]
    eval_records = export_text_lines(tmp_path, ["A sentence no training record holds.", repeated, "Another one."])
    held_out_config(smoke_config, eval_records)
    with pytest.raises(PipelineConfigError, match=rf"1 of the 3 records in {eval_records} repeat records .*\(0 the "
                                                  r"same id, 1 the same text under another id\), e.g. "
                                                  r"'validation.txt:2'"):
        preflight.check_config(smoke_config)


def test_a_few_texts_the_corpus_repeats_under_other_ids_are_kept_with_a_note(smoke_config, teacher_records,
                                                                            tmp_path, capsys):
    """Up to batches.MAX_TEXT_ONLY_REPEATS of the held-out records may repeat a training text under another id (a
    WordNet gloss shared by two synsets): one line says so, and the run goes on."""
    repeated = batches.open_records(smoke_config, str(teacher_records), "data.records_dir")[5]["text"]
    lines = [repeated] + [f"Validation sentence number {number} about nothing in particular." for number in range(24)]
    eval_records = export_text_lines(tmp_path, lines)
    preflight.check_config(held_out_config(smoke_config, eval_records))
    assert (f"[preflight] data.eval_records_dir: 1 of the 25 records in {eval_records} repeat records of the "
            f"training records in {teacher_records} (data.records_dir) by text under another id, e.g. "
            f"'validation.txt:1'") in capsys.readouterr().out


def test_disjoint_held_out_records_pass(smoke_config, tmp_path):
    eval_records = tmp_path / "eval_records"
    config = kit.minilm_export_config(eval_records, num_texts=16)
    config.corpus.skip_texts = kit.TEACHER_RECORDS_COUNT  # past the training records' slice of the same order
    from embed_jax.teachers import export

    export.run_export(config)
    preflight.check_config(held_out_config(smoke_config, eval_records))


@pytest.mark.parametrize("key,value,message", [
    ("stage1.kind", "pooled", r"stage1.kind='pooled': use one of \['records', 'cached_pooled', 'images', 'pairs'\]"),
    ("stage2.head_learning_rate", 0.0, r"stage2.head_learning_rate=0.0: stage stage2's peak learning rate"),
    ("stage2.last_layers", 0, r"stage2.last_layers=0: trainable='heads\+last_layers' trains"),
    ("stage2.kind", "cached_pooled", r"stage2.kind='cached_pooled' needs stage2.trainable='heads'"),
    ("stage2.kind", "images", r"stage2.kind='images' and stage2.trainable='heads\+last_layers': an image stage"),
    ("stage2.trainable", "vision", r"stage2.kind='records' and stage2.trainable='vision': an image stage"),
])
def test_bad_stage_values_name_the_stage_key(key, value, message):
    config = kit.load_config_file("distill", "smoke")
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(preflight.ConfigError, match=message):
        preflight.check_config(config)


def test_a_replicate_frozen_that_is_no_bool_is_refused_naming_the_key():
    # A command line cannot give one (the section's ConfigDict types the key as bool); a section written as a plain
    # dict can, and preflight names it.
    stage = train_config.StageConfig("heads+last_layers", 8e-5, 10, replicate_frozen="yes")
    with pytest.raises(preflight.ConfigError, match=r"stage2.replicate_frozen='yes': True \(the frozen parameters "
                                                    r"whole on every fsdp device\) or False"):
        stage.check("stage2")


def test_a_stage_key_the_schema_does_not_declare_is_refused_naming_it():
    config = kit.load_config_file("distill", "smoke")
    config.stage2.head_lr = 3e-4  # a typo of head_learning_rate, which would otherwise be ignored
    with pytest.raises(preflight.ConfigError, match=r"config key stage2.head_lr: a stage has no such key; its keys "
                                                    r"are \['trainable', 'learning_rate', 'num_steps', 'kind'"):
        preflight.check_config(config)


def test_stage_order_naming_no_section_is_refused():
    config = kit.load_config_file("distill", "smoke")
    config.stage_order = ("stage1", "stage9")
    with pytest.raises(preflight.ConfigError, match=r"stage_order names 'stage9', but the config has no such section"):
        preflight.check_config(config)


def test_a_tokenizer_other_than_init_froms_is_refused_naming_both_keys(smoke_config):
    smoke_config.data.tokenizer = "asset:all-mpnet-base-v2"  # MPNet's vocabulary; the student is a MiniLM-vocab BERT
    with pytest.raises(preflight.ConfigError, match=r"config keys data.tokenizer='asset:all-mpnet-base-v2' and "
                                                    r"model.init_from='.*' name different tokenizers \(30527 vs "
                                                    r"30522 tokens"):
        preflight.check_config(smoke_config)


def test_a_copy_of_init_froms_tokenizer_passes(smoke_config, tmp_path):
    smoke_config.data.tokenizer = str(kit.copy_tokenizer_files(Path(smoke_config.model.init_from), tmp_path / "tok"))
    preflight.check_config(smoke_config)


def test_teacher_grouping_over_a_window_of_one_batch_says_batches_stay_random(smoke_config, capsys):
    config = smoke_config
    config.data.group_by, config.data.length_grouping_window = "teacher", 1
    preflight.check_config(config)
    assert ("[preflight] data.group_by='teacher' with data.length_grouping_window=1: a window of one batch is not "
            "regrouped, so batches are random (no teacher grouping)") in capsys.readouterr().out
    config.data.length_grouping_window = 64
    preflight.check_config(config)
    assert "[preflight]" not in capsys.readouterr().out


def test_a_stage_unfreezing_more_layers_than_the_encoder_has_is_refused_before_any_work(smoke_config):
    smoke_config.stage2.last_layers = 9  # the tiny student has 4
    with pytest.raises(preflight.ConfigError, match=r"config key stage2\.last_layers=9: the student's text encoder "
                                                    r"\(.*\) has 4 layers; choose 1 to 4"):
        preflight.check_config(smoke_config)
