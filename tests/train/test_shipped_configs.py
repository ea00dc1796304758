"""Every shipped training config runs every stage of its `stage_order` through the real training loop and train
step, at smoke shapes on the CPU, with the config's own model options (remat, scan, causal, dtype, pooling, mesh).

Only what a CPU test cannot hold is swapped: the init folder becomes a tiny random Hugging Face model of the config's
own family and depth where a stage counts layers (MiniLM's tokenizer, so real text tokenises), the records hold two
teachers as the configs expect, real all-MiniLM-L6-v2 plus a tiny BERT standing in for all-mpnet-base-v2 (so FC1 is
384 + 32 = 416-d, wider than every reduction head, and the teacher weights name the stand-in), and the stages take a
few steps (train_config.shrink_for_smoke). A config with a pair stage or an FC1 started from the start gets records of
real WordNet pairs whose second teacher is the tiny init folder itself. configs/vision.py's stage 4 runs the same way in tests/vision/test_stage4.py (its
tower trains from scratch, so its own config is already tiny).

A config nobody runs crashes on the user's slice: configs/jasper.py's remat with frozen parameters failed to trace in
stages 1 and 2 until this test drove them (embed_jax/models/layers.py, run_layers).
"""
from pathlib import Path

import pytest

import kit
from embed_jax.train import config as train_config
from embed_jax.train import loop
from embed_jax.train.metrics import read_metrics


def save_tiny_qwen2(folder: Path) -> Path:
    """stella's family at toy size: Qwen2 with one KV head, MiniLM's vocabulary and tokenizer."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=kit.MINILM_VOCAB_SIZE, hidden_size=32, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                                      intermediate_size=64, max_position_embeddings=64)
    transformers.Qwen2Model(config).save_pretrained(folder)
    return kit.copy_tokenizer_files(kit.minilm_path(), folder)


def save_tiny_mpnet(folder: Path) -> Path:
    """all-mpnet-base-v2's family at toy size, with MiniLM's (BERT) vocabulary and tokenizer."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.MPNetConfig(vocab_size=kit.MINILM_VOCAB_SIZE, hidden_size=32, num_hidden_layers=3,
                                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=66)
    transformers.MPNetModel(config).save_pretrained(folder)
    return kit.copy_tokenizer_files(kit.minilm_path(), folder)


def save_tiny_bert(folder: Path) -> Path:
    """MiniLM's family and depth (configs/distill.py's stage 2 unfreezes all six layers)."""
    return kit.save_tiny_bert(folder, num_layers=6, max_positions=64, pooler=False)


@pytest.fixture(scope="module")
def two_teacher_records(tmp_path_factory, tiny_bert) -> Path:
    from embed_jax.teachers import export

    config = kit.minilm_and_tiny_export_config(tmp_path_factory.mktemp("two_teachers") / "records", tiny_bert)
    export.run_export(config)
    return Path(config.output_dir)


# config file, its argument, the family its init_from names (a tiny random one stands in). configs/distill.py:smoke
# trains every stage in tests/train/test_loop.py (`default_stages`, a run several tests inspect), so not again here.
SHIPPED = [
    ("jasper", "smoke", save_tiny_qwen2),
    ("results", None, save_tiny_bert),
    ("results", "small", save_tiny_bert),
    ("shrink", "smoke", save_tiny_mpnet),
    ("shrink", "minilm,smoke", save_tiny_bert),
]


def smoke_run_config(name: str, arg: str | None, init_folder: Path, records: Path):
    config = kit.load_config_file(name, arg)
    train_config.shrink_for_smoke(config)
    config.model.init_from = str(init_folder)
    config.data.records_dir = str(records)
    # One length bucket: each bucket compiles every text stage's step again, and bucketing has its own tests
    # (tests/data/test_pipeline.py, tests/train/test_loop.py); what this test is for is each stage's step.
    config.data.length_buckets = (config.data.max_length,)
    # The tiny BERT teacher stands in for all-mpnet-base-v2, with the share the config gives mpnet.
    config.data.teacher_weights = config.data.teacher_weights.replace("mpnet=", "tiny=")
    if config.model.teacher_dim:
        config.model.teacher_dim = kit.MINILM_DIM + kit.TINY_BERT_HIDDEN
    return config


def needs_own_records(config) -> bool:
    """A config whose stages need more of the records than two teachers: WordNet pairs (a pair stage), or the
    student's own start among the teachers (fc1_init='start')."""
    stages = [train_config.stage_config(config, name) for name in config.stage_order]
    return any(stage.kind == "pairs" or stage.fc1_init == "start" for stage in stages)


@pytest.mark.slow
@pytest.mark.parametrize("name, arg, save_family", SHIPPED, ids=[f"{n}:{a}" if a else n for n, a, _ in SHIPPED])
def test_every_stage_of_a_shipped_config_trains(name, arg, save_family, two_teacher_records, tmp_path):
    init = save_family(tmp_path / "init")
    records = two_teacher_records
    if needs_own_records(kit.load_config_file(name, arg)):
        # Real WordNet pairs, and the tiny init folder itself as the second teacher (its stand-in for mpnet), so that
        # a stage's FC1 can start from the start's own block.
        (tmp_path / "records").mkdir()
        records = kit.export_wordnet_pair_records(tmp_path / "records", second_teacher=init)
    config = smoke_run_config(name, arg, init, records)
    options = dict(config.model.text_options)
    results = loop.train_and_evaluate(config, tmp_path / "run")
    assert [result.name for result in results] == list(config.stage_order)
    for result in results:
        rows = read_metrics(result.workdir / "metrics.jsonl")
        assert rows and rows[-1]["step"] == config[result.name].num_steps, result.name
    # The options the config ships with are the ones the stages ran (nothing swapped them for test convenience).
    assert dict(config.model.text_options) == options == dict(kit.load_config_file(name, arg).model.text_options)


def test_the_papers_config_keeps_remat_on_unscanned_layers():
    """The options test_every_stage_of_a_shipped_config_trains[jasper:smoke] exercises: remat with frozen parameters
    in stages 1 and 2 (the trace-level failure) needs remat=True, scan=False."""
    options = kit.load_config_file("jasper", "smoke").model.text_options
    assert options.remat is True and options.scan is False
