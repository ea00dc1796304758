"""Teachers as their authors ship them: device and dtype, named prompts, Dense heads, remote code — all offline.

The sentence-transformers folder is built here from the tiny random BERT (Transformer → mean Pooling → Dense 32→16)
with a second head folder `2_Dense_8`, as stella_en_1.5B_v5 ships `2_Dense_<dims>` folders; the remote-code folder
carries its own `modeling_tiny_remote.py` and an `auto_map`, as NV-Embed-v2 and stella do.
"""
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from embed_jax.data import corpora, records
from embed_jax.teachers import encoders, export
from embed_jax.teachers.encoders import TeacherConfigError, TeacherSpec

TEXTS = [item.text for item in corpora.builtin_texts("wordnet", 12)]
PROMPTS = {"query": "Instruct: Retrieve semantically similar text.\nQuery: ", "passage": ""}


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory, tiny_bert) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("tiny_st") / "model"
    transformer = Transformer(str(tiny_bert), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Dense(32, 16)], prompts=PROMPTS,
                                device="cpu")
    model.save(str(folder))
    (folder / "2_Dense_8").mkdir()
    Dense(32, 8).save(str(folder / "2_Dense_8"))
    return folder


def reference_st(folder: Path, dense_path: str | None = None):
    """What the model card says to do for another head: a copy whose modules.json names that Dense folder."""
    from sentence_transformers import SentenceTransformer

    if dense_path:
        copy = folder.parent / f"copy_{dense_path}"
        if not copy.exists():
            shutil.copytree(folder, copy)
            modules = json.loads((copy / "modules.json").read_text())
            for module in modules:
                if module["type"].endswith("Dense"):
                    module["path"] = dense_path
            (copy / "modules.json").write_text(json.dumps(modules))
        folder = copy
    return SentenceTransformer(str(folder), device="cpu")


def encode(teacher, texts=TEXTS):
    return encoders.encode_texts(teacher, texts, max_tokens_per_batch=512, max_batch_size=8)


def test_prompt_name_is_the_folders_named_prompt(st_folder):
    teacher = encoders.load_teacher(TeacherSpec("st", str(st_folder), prompt_name="query"))
    assert teacher.prompt == PROMPTS["query"]
    np.testing.assert_allclose(encode(teacher), reference_st(st_folder).encode(TEXTS, prompt_name="query"),
                               atol=1e-6)


def test_unknown_prompt_name_lists_the_defined_ones(st_folder, tiny_bert):
    message = r"teachers.st.prompt_name='s2p_query': .*config_sentence_transformers.json defines .*'passage', 'query'"
    with pytest.raises(TeacherConfigError, match=message):
        encoders.load_teacher(TeacherSpec("st", str(st_folder), prompt_name="s2p_query"))
    with pytest.raises(TeacherConfigError, match=r"teachers.hf.prompt_name='query': .* defines no prompts"):
        encoders.load_teacher(TeacherSpec("hf", str(tiny_bert), pooling="mean", prompt_name="query"))
    with pytest.raises(TeacherConfigError, match=r"teachers.st.prompt and teachers.st.prompt_name are both set"):
        encoders.load_teacher(TeacherSpec("st", str(st_folder), prompt="q: ", prompt_name="query"))


def test_dense_head_replaces_the_folders_dense_module(st_folder):
    default = encoders.load_teacher(TeacherSpec("st", str(st_folder)))
    head = encoders.load_teacher(TeacherSpec("st", str(st_folder), dense_head="2_Dense_8"))
    assert (default.dim, head.dim) == (16, 8)
    np.testing.assert_allclose(encode(head), reference_st(st_folder, "2_Dense_8").encode(TEXTS), atol=1e-6)


def test_missing_dense_head_lists_the_heads_there(st_folder, tiny_bert):
    message = (r"teachers.st.dense_head='2_Dense_8192': .* is not a Dense folder \(no config.json\); the folder's "
               r"Dense heads are 2_Dense, 2_Dense_8")
    with pytest.raises(TeacherConfigError, match=message):
        encoders.load_teacher(TeacherSpec("st", str(st_folder), dense_head="2_Dense_8192"))
    with pytest.raises(TeacherConfigError, match=r"teachers.hf.dense_head='2_Dense_8' needs pooling 'auto'"):
        encoders.load_teacher(TeacherSpec("hf", str(tiny_bert), pooling="mean", dense_head="2_Dense_8"))


def test_append_eos_ends_every_text_with_the_eos_token(st_folder, tmp_path):
    with pytest.raises(TeacherConfigError, match=r"teachers.st.append_eos=True, but the tokenizer of .* defines no "
                                                 r"eos_token"):
        encode(encoders.load_teacher(TeacherSpec("st", str(st_folder), append_eos=True)))
    with_eos = shutil.copytree(st_folder, tmp_path / "with_eos")
    tokenizer_config = json.loads((with_eos / "tokenizer_config.json").read_text())
    (with_eos / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "eos_token": "[SEP]"}))
    teacher = encoders.load_teacher(TeacherSpec("st", str(with_eos), append_eos=True, prompt_name="query"))
    expected = reference_st(with_eos).encode([text + "[SEP]" for text in TEXTS], prompt_name="query")
    np.testing.assert_allclose(encode(teacher), expected, atol=1e-6)
    assert np.abs(encode(teacher) - reference_st(with_eos).encode(TEXTS, prompt_name="query")).max() > 1e-4


# --- remote code ----------------------------------------------------------------------------------------------------

MODELING = '''
import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput


class TinyRemoteConfig(PretrainedConfig):
    model_type = "tiny-remote"

    def __init__(self, vocab_size=30522, hidden_size=16, max_position_embeddings=64, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.max_position_embeddings = max_position_embeddings
        super().__init__(**kwargs)


class TinyRemoteModel(PreTrainedModel):
    """Not a model transformers knows: token embedding, then tanh of a square projection."""
    config_class = TinyRemoteConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.project = torch.nn.Linear(config.hidden_size, config.hidden_size)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (torch.nn.Embedding, torch.nn.Linear)):
            torch.nn.init.normal_(module.weight, std=0.5)
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.bias, std=0.5)

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return BaseModelOutput(last_hidden_state=torch.tanh(self.project(self.embed(input_ids))))
'''
AUTO_MAP = {"AutoConfig": "modeling_tiny_remote.TinyRemoteConfig", "AutoModel": "modeling_tiny_remote.TinyRemoteModel"}


@pytest.fixture(scope="module")
def remote_folder(tmp_path_factory, tiny_bert) -> Path:
    folder = tmp_path_factory.mktemp("tiny_remote") / "model"
    folder.mkdir()
    (folder / "modeling_tiny_remote.py").write_text(MODELING)
    spec = importlib.util.spec_from_file_location("modeling_tiny_remote", folder / "modeling_tiny_remote.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(2)
    module.TinyRemoteModel(module.TinyRemoteConfig()).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": AUTO_MAP}))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tiny_bert / name, folder / name)
    return folder


def test_remote_code_is_refused_while_the_switch_is_off(remote_folder):
    with pytest.raises(TeacherConfigError, match=r"teachers.nv.trust_remote_code is off, but .*config.json has an "
                                                 r"auto_map \(AutoConfig: modeling_tiny_remote.TinyRemoteConfig, "
                                                 r".*set --config.teachers.nv.trust_remote_code=True"):
        encoders.load_teacher(TeacherSpec("nv", str(remote_folder), pooling="mean"))


def test_remote_code_runs_the_folders_own_model(remote_folder):
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    teacher = encoders.load_teacher(TeacherSpec("nv", str(remote_folder), pooling="mean", trust_remote_code=True))
    assert type(teacher.model).__name__ == "TinyRemoteModel" and teacher.max_seq_length == 64
    # The expected vectors from the weights file and the modelling file's formula, without transformers' model.
    weights = load_file(str(remote_folder / "model.safetensors"))
    tokenizer = AutoTokenizer.from_pretrained(str(remote_folder))
    expected = []
    for text in TEXTS:
        ids = tokenizer(text, truncation=True, max_length=64)["input_ids"]
        hidden = np.tanh(weights["embed.weight"][ids] @ weights["project.weight"].T + weights["project.bias"])
        expected.append(hidden.mean(axis=0))
    np.testing.assert_allclose(encode(teacher), np.stack(expected), atol=1e-5)


# --- device and dtype -----------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch sees no GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_named(tiny_bert, device):
    with pytest.raises(TeacherConfigError, match=rf"teachers.t.device='{device}', but torch sees no GPU here .* "
                                                 rf"set --config.teachers.t.device=cpu, or auto"):
        encoders.load_teacher(TeacherSpec("t", str(tiny_bert), pooling="mean", device=device))


@pytest.mark.parametrize("field, value, message", [
    ("device", "gpu", r"teachers.t.device='gpu'; choose one of cpu, cuda, cuda:N or auto"),
    ("dtype", "int8", r"teachers.t.dtype='int8'; choose one of float32, bfloat16, float16"),
    ("dtype", "fp16", r"teachers.t.dtype='fp16'; choose one of float32, bfloat16, float16"),
])
def test_bad_device_or_dtype_is_named(tiny_bert, field, value, message):
    with pytest.raises(TeacherConfigError, match=message):
        encoders.load_teacher(TeacherSpec("t", str(tiny_bert), pooling="mean", **{field: value}))


def test_autocast_needs_a_half_dtype(tiny_bert):
    with pytest.raises(TeacherConfigError, match=r"teachers.t.autocast=True with dtype float32 changes nothing"):
        encoders.load_teacher(TeacherSpec("t", str(tiny_bert), pooling="mean", autocast=True))


def test_auto_device_is_cpu_without_a_gpu(tiny_bert):
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert str(encoders.resolve_device(TeacherSpec("t", str(tiny_bert), device="auto"), local_rank=0)) == expected


@pytest.mark.parametrize("dtype, autocast", [("bfloat16", False), ("bfloat16", True), ("float16", False)])
def test_half_precision_vectors_are_float32_and_close(st_folder, dtype, autocast):
    full = encode(encoders.load_teacher(TeacherSpec("st", str(st_folder))))
    teacher = encoders.load_teacher(TeacherSpec("st", str(st_folder), dtype=dtype, autocast=autocast))
    weights = next(teacher.model.parameters()).dtype
    assert weights == (torch.float32 if autocast else encoders.DTYPES[dtype])
    half = encode(teacher)
    assert half.dtype == np.float32
    cosine = (half * full).sum(1) / np.linalg.norm(half, axis=1) / np.linalg.norm(full, axis=1)
    assert cosine.min() > 0.99 and not np.array_equal(half, full)


def test_manifest_records_each_teachers_dtype_and_device(make_config, corpus_file, tmp_path, st_folder):
    config = make_config(tmp_path / "out", corpus_file, **{"teachers.tiny.dtype": "bfloat16",
                                                          "teachers.tiny.autocast": True})
    config.teachers.st = dict(config.teachers.tiny.to_dict(), path=str(st_folder), pooling="auto", dtype="float32",
                              autocast=False, prompt_name="query", dense_head="2_Dense_8")
    config.teacher_order = "tiny,st"
    manifest = export.run_export(config)
    stored = json.loads((tmp_path / "out" / records.MANIFEST_NAME).read_text())["teachers"]
    assert [(teacher["dtype"], teacher["autocast"], teacher["device"]) for teacher in stored] == [
        ("bfloat16", True, "cpu"), ("float32", False, "cpu")]
    assert (stored[1]["prompt_name"], stored[1]["prompt"], stored[1]["dense_head"], stored[1]["dim"]) == (
        "query", PROMPTS["query"], "2_Dense_8", 8)
    assert manifest.teacher_dim == 32 + 8


def test_default_settings_keep_the_export_identity_of_older_manifests():
    """Manifests written before device and dtype were per teacher lack those keys; their id must not change."""
    teacher = {"name": "a", "path": "p", "dim": 4, "pooling": "mean", "prompt": "", "max_seq_length": 8,
               "weights_sha256": "0" * 64, "order": 0}
    fields = {"schema_version": 1, "dtype": "float16", "normalisation": records.NORMALISATION, "corpus": {},
              "shard_size": 4}
    old = records.export_id({**fields, "teachers": [teacher]})
    new = records.TeacherInfo(**teacher)
    import dataclasses

    assert records.export_id({**fields, "teachers": [dataclasses.asdict(new)]}) == old
    changed = dataclasses.replace(new, dtype="bfloat16")
    assert records.export_id({**fields, "teachers": [dataclasses.asdict(changed)]}) != old
