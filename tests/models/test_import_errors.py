"""Bad input to the Hugging Face importer: each failure names what is wrong, where, and what to do."""
import json

import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from embed_jax.models import bert, hf_import
from embed_jax.models.hf_import import WeightMismatchError, load_text_encoder
from embed_jax.models.tables.bert import TABLE as BERT_TABLE

BERT_CONFIG = dict(vocab_size=31, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=12,
                   max_position_embeddings=8)


@pytest.fixture()
def tiny_bert_folder(tmp_path):
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**BERT_CONFIG)).save_pretrained(tmp_path)
    return tmp_path


def rewrite_weights(folder, edit):
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors")


def test_unsupported_model_type_lists_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deberta-v2", "hidden_size": 8}))
    with pytest.raises(ValueError, match=r"model_type 'deberta-v2' is not a supported text encoder; supported "
                                         r"model_type values: bert, gpt2, mpnet, qwen2, roberta, xlm-roberta") as error:
        load_text_encoder(tmp_path)
    assert str(tmp_path / "config.json") in str(error.value)


def test_missing_unexpected_and_misshaped_are_reported_together(tiny_bert_folder):
    def damage(tensors):
        del tensors["encoder.layer.1.attention.self.key.weight"]
        del tensors["embeddings.LayerNorm.bias"]
        tensors["encoder.layer.0.attention.self.rotary.weight"] = np.zeros((8, 8), np.float32)
        tensors["encoder.layer.5.intermediate.dense.bias"] = np.zeros((12,), np.float32)
        tensors["encoder.layer.0.intermediate.dense.weight"] = np.zeros((13, 8), np.float32)

    rewrite_weights(tiny_bert_folder, damage)
    for scan in (False, True):
        with pytest.raises(WeightMismatchError) as error:
            load_text_encoder(tiny_bert_folder, scan=scan)
        message = str(error.value)
        assert "2 missing, 2 unexpected, 1 mis-shaped" in message
        assert "embeddings.LayerNorm.bias" in error.value.missing
        key_kernel = ("encoder.layer.attention.self.key.kernel[layer 1]" if scan
                      else "encoder.layer.1.attention.self.key.kernel")
        assert key_kernel in error.value.missing
        assert "encoder.layer.0.attention.self.rotary.weight" in error.value.unexpected
        assert any(entry.startswith("encoder.layer.5.intermediate.dense.bias → ") and "no such parameter" in entry
                   for entry in error.value.unexpected)
        assert error.value.misshaped == [
            "encoder.layer.0.intermediate.dense.weight (13, 8) → encoder.layer.0.intermediate.dense.kernel: "
            "model expects (8, 12)"
        ]
        assert str(tiny_bert_folder) in message and "Check that config.json belongs to these weights" in message


def test_two_tensors_for_one_parameter_are_refused(tiny_bert_folder):
    # An old-style name (LayerNorm.gamma) beside the new one (LayerNorm.weight) would otherwise silently overwrite it.
    rewrite_weights(tiny_bert_folder, lambda t: t.update({"embeddings.LayerNorm.gamma": np.ones(8, np.float32)}))
    with pytest.raises(WeightMismatchError) as error:
        load_text_encoder(tiny_bert_folder)
    assert any("a second tensor for the same parameter" in entry for entry in error.value.unexpected)


@pytest.mark.slow
def test_a_failed_import_leaves_the_module_untouched(tiny_bert_folder):
    module = bert.from_hf_config(json.loads((tiny_bert_folder / "config.json").read_text()), rngs=nnx.Rngs(0))
    before = np.asarray(module.embeddings.word_embeddings.embedding[...]).copy()
    tensors = dict(load_file(tiny_bert_folder / "model.safetensors"))
    del tensors["encoder.layer.0.output.dense.bias"]
    with pytest.raises(WeightMismatchError):
        hf_import.assign_weights(module, tensors, BERT_TABLE, source="edited tensors")
    np.testing.assert_array_equal(np.asarray(module.embeddings.word_embeddings.embedding[...]), before)


def test_known_heads_and_buffers_are_ignored_and_reported(tiny_bert_folder):
    module = nnx.eval_shape(lambda: bert.from_hf_config(json.loads((tiny_bert_folder / "config.json").read_text()),
                                                        rngs=nnx.Rngs(0)))
    report = hf_import.load_weights(module, tiny_bert_folder, BERT_TABLE)
    assert report.prefix == ""
    assert "pooler.dense.weight" in report.ignored


def test_missing_shard_file_is_named(tmp_path):
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**BERT_CONFIG)).save_pretrained(tmp_path, max_shard_size="4KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[1].unlink()
    with pytest.raises(FileNotFoundError, match=f"lists shard files that are missing: .*{shards[1].name}"):
        load_text_encoder(tmp_path)


def test_pytorch_pickle_only_folder_says_how_to_convert(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", **BERT_CONFIG}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(FileNotFoundError, match=r"no model.safetensors .*pytorch_model.bin.*save_pretrained"):
        load_text_encoder(tmp_path)


def test_folder_without_config_or_modules_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither config.json .* nor modules.json"):
        load_text_encoder(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_text_encoder(tmp_path / "absent")


def test_sentence_transformers_folder_with_transformer_in_a_subfolder(tiny_bert_folder, tmp_path_factory):
    outer = tmp_path_factory.mktemp("st")
    inner = outer / "0_Transformer"
    inner.mkdir()
    for path in tiny_bert_folder.iterdir():
        (inner / path.name).write_bytes(path.read_bytes())
    modules = [{"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"}]
    (outer / "modules.json").write_text(json.dumps(modules))
    module, hf_config = load_text_encoder(outer)
    assert hf_config["hidden_size"] == 8 and module.hidden_size == 8
    (outer / "modules.json").write_text(json.dumps([{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    with pytest.raises(FileNotFoundError, match="has no sentence_transformers.models.Transformer module"):
        load_text_encoder(outer)


def test_broken_config_json_names_the_line(tmp_path):
    (tmp_path / "config.json").write_text('{\n  "model_type": "bert",\n  "hidden_size": 8,,\n}')
    with pytest.raises(ValueError, match=r"config.json line 3: not valid JSON"):
        load_text_encoder(tmp_path)


def test_config_without_a_required_key_names_it(tmp_path):
    settings = {"model_type": "bert", **BERT_CONFIG}
    del settings["num_attention_heads"]
    (tmp_path / "config.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="config.json lacks the key 'num_attention_heads'"):
        load_text_encoder(tmp_path)


def test_unknown_option_lists_the_valid_ones(tiny_bert_folder):
    with pytest.raises(ValueError, match="unknown option.* causal for BertConfig; valid options: scan, remat, "
                                         "truncate_long_inputs"):
        load_text_encoder(tiny_bert_folder, causal=False)


def test_unsupported_bert_settings_are_refused(tiny_bert_folder):
    settings = json.loads((tiny_bert_folder / "config.json").read_text())
    settings["position_embedding_type"] = "relative_key"
    with pytest.raises(ValueError, match="position_embedding_type='relative_key' is not supported"):
        bert.config_from_hf(settings, source="x/config.json")
