"""Fixtures for the evaluation tests: real folders in every layout the evaluator reads, built small.

* `tiny_bert` (tests/conftest.py): a random 2-layer BERT saved as a Hugging Face folder, with all-MiniLM-L6-v2's
  tokenizer files;
* `tiny_st`: the same encoder as a stella-style sentence-transformers folder (Pooling + two `2_Dense_{dim}` heads,
  modules.json routing through 2_Dense_16), the layout embed_jax's exporter writes;
* `tiny_onnx`: `tiny_st` as the ONNX graphs of embed_jax.convert.onnx (every head, and the int8 graph);
* `export_records(name, items)`: real teacher records (embed_jax.teachers.export, the tiny BERT as teacher) of a
  JSONL corpus of (id, text) pairs;
* `tiny_workdir`: a stage-1 student trained by the real loop on clean records, with its run config (config.json);
* `st_teacher_workdir`: the same, on records whose teacher is `tiny_st` (what `asym:STUDENT` pairs it with).
"""
import json
import shutil
from pathlib import Path

import pytest
import torch

import kit
from embed_jax.data import corpora
from embed_jax.train.workdir import RUN_CONFIG_FILE

HEAD_DIMS = (16, 8)


def save_stella_folder(folder: Path, encoder_folder: Path, default_dim: int = HEAD_DIMS[0]) -> Path:
    """A sentence-transformers folder: Transformer at the root, 1_Pooling, one 2_Dense_{dim} per head."""
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling

    shutil.copytree(encoder_folder, folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": kit.TINY_BERT_POSITIONS,
                                                                  "do_lower_case": False}))
    (folder / "1_Pooling").mkdir()
    Pooling(kit.TINY_BERT_HIDDEN, pooling_mode="mean").save(str(folder / "1_Pooling"))
    torch.manual_seed(1)
    for dim in HEAD_DIMS:
        (folder / f"2_Dense_{dim}").mkdir()
        head = Dense(kit.TINY_BERT_HIDDEN, dim, activation_function=torch.nn.Identity())
        head.save(str(folder / f"2_Dense_{dim}"))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": f"2_Dense_{default_dim}", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "3_Normalize").mkdir()
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    return folder


@pytest.fixture(scope="session")
def tiny_st(tmp_path_factory, tiny_bert) -> Path:
    return save_stella_folder(tmp_path_factory.mktemp("eval_tiny_st") / "tiny_st", tiny_bert)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_st) -> Path:
    from embed_jax.convert import onnx_graph

    out = tmp_path_factory.mktemp("eval_tiny_onnx") / "onnx"
    return onnx_graph.export_onnx(tiny_st, out, all_heads=True, quantize="int8").folder


@pytest.fixture(scope="session")
def export_records(tmp_path_factory, tiny_bert):
    """(name, [(id, text), ...]) → a finished records folder, exported by the real teacher export."""
    from embed_jax.teachers import export

    def make(name: str, items: list[tuple[str, str]]) -> Path:
        root = tmp_path_factory.mktemp(f"records_{name}")
        corpus = root / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"id": record_id, "text": text}) + "\n" for record_id, text in items))
        config = kit.load_config_file("teachers", "smoke")
        config.output_dir = str(root / "records")
        config.corpus.kind = "jsonl"
        config.corpus.paths = str(corpus)
        config.corpus.id_field = "id"
        for teacher in list(config.teachers):
            del config.teachers[teacher]
        config.teachers.tiny = dict(path=str(tiny_bert), pooling="mean", prompt="", max_seq_length=0)
        config.teacher_order = "tiny"
        config.storage_dtype = "float32"
        config.shard_size = 16
        config.progress_every_s = 0.0
        export.run_export(config)
        return Path(config.output_dir)

    return make


def training_items(count: int) -> list[tuple[str, str]]:
    return [(item.id, item.text) for item in corpora.builtin_texts("wordnet", count)]


@pytest.fixture(scope="session")
def clean_records(export_records) -> Path:
    return export_records("clean", training_items(40))


@pytest.fixture(scope="session")
def id_overlap_records(export_records) -> Path:
    """Clean texts, but two records carry ids of held-out WordNet synsets."""
    held_out = corpora.wordnet_holdout()[:2]
    items = training_items(20)
    items[5] = (f"wordnet:{held_out[0].key}:definition", "a made-up gloss that WordNet does not hold")
    items[9] = (f"wordnet:{held_out[1].key}:definition", "another invented gloss for the id check")
    return export_records("id_overlap", items)


@pytest.fixture(scope="session")
def text_overlap_records(export_records) -> Path:
    """Innocent ids, but one text is a Lee hold-out document (with different case and spacing)."""
    items = training_items(20)
    lee_document = corpora.lee_holdout()[7].text
    items[12] = ("my_corpus:12", "  " + lee_document.upper().replace(" ", "   ") + " ")
    return export_records("text_overlap", items)


def write_run_config(workdir: Path, config) -> None:
    """The run config embed_jax.main leaves in a workdir (the training config as JSON, absolute records folders),
    written here only if the loop did not write it."""
    path = workdir / RUN_CONFIG_FILE
    if not path.exists():
        values = config.to_dict()
        values["data"]["records_dir"] = str(Path(values["data"]["records_dir"]).resolve())
        path.write_text(json.dumps(values, default=str))


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory, tiny_bert, clean_records) -> Path:
    from embed_jax.train import loop

    config = kit.load_config_file("distill", "smoke")
    config.model.init_from = str(tiny_bert)
    config.model.teacher_dim = kit.TINY_BERT_HIDDEN
    config.data.teacher_weights = ""  # the fixture records' own teachers, equally
    config.model.reduction_dims = (8,)
    config.data.records_dir = str(clean_records)
    config.stage_order = ("stage1",)
    config.stage1.fc1_init = ""  # the tiny init folder is none of the records' teachers
    config.stage1.num_steps = 2
    config.stage1.reduction_heads = True
    workdir = tmp_path_factory.mktemp("eval_workdir") / "train"
    loop.train_and_evaluate(config, workdir)
    write_run_config(workdir, config)
    return workdir


@pytest.fixture(scope="session")
def st_teacher_workdir(tmp_path_factory, tiny_st):
    """A stage-1 student trained by the real loop on records whose teacher is the tiny sentence-transformers
    folder (16-d): what asym:STUDENT pairs with it."""
    from embed_jax.teachers import export
    from embed_jax.train import loop

    root = tmp_path_factory.mktemp("st_teacher_run")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": key, "text": text}) + "\n" for key, text in training_items(24)))
    teachers = kit.load_config_file("teachers", "smoke")
    teachers.output_dir = str(root / "records")
    teachers.corpus.kind, teachers.corpus.paths, teachers.corpus.id_field = "jsonl", str(corpus), "id"
    for name in list(teachers.teachers):
        del teachers.teachers[name]
    teachers.teachers.tiny_st = dict(path=str(tiny_st), pooling="auto", prompt="", max_seq_length=0)
    teachers.teacher_order, teachers.storage_dtype, teachers.progress_every_s = "tiny_st", "float32", 0.0
    export.run_export(teachers)
    config = kit.load_config_file("distill", "smoke")
    config.model.init_from = str(tiny_st)
    config.model.teacher_dim = HEAD_DIMS[0]
    config.data.teacher_weights = ""  # the fixture records' own teachers, equally
    config.model.reduction_dims = (8,)
    config.data.records_dir = teachers.output_dir
    config.stage_order = ("stage1",)
    config.stage1.fc1_init = ""  # the tiny init folder is none of the records' teachers
    config.stage1.num_steps = 2
    workdir = root / "train"
    loop.train_and_evaluate(config, workdir)
    write_run_config(workdir, config)
    return workdir
