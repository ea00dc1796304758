"""An ONNX graph of embed_jax.convert.onnx as a model spec (embed_jax/eval/onnx_model.py): the export folder scores
its fp32 graph, a .onnx file in it that graph; each head a row named as in the sentence-transformers folder it came
from, with that folder's vectors; the int8 graph scored beside them; graphs without their export record refused."""
import json
import shutil

import numpy as np
import pytest

from embed_jax.convert import onnx_graph
from embed_jax.data.corpora import wordnet_holdout
from embed_jax.eval import encoding
from embed_jax.eval.__main__ import main
from embed_jax.eval.onnx_model import OnnxModel
from embed_jax.eval.st_model import SentenceTransformerModel
from embed_jax.eval import overlap

# Slow lane only (docs/testing.md, "Fast lane"): compiles, exports or trains whole models.
pytestmark = pytest.mark.slow

MIN_COSINE = 0.99999
LEE = "--tasks=lee_similarity,lee_retrieval"


def texts() -> list[str]:
    return ["dog"] + [synset.definition for synset in wordnet_holdout()[600:620]]


def run(capsys, *arguments):
    code = main(list(arguments))
    return code, capsys.readouterr().err


def test_each_head_of_the_graph_gives_the_folder_vectors(tiny_st, tiny_onnx):
    context = encoding.EncodeContext()
    graph = OnnxModel(str(tiny_onnx), tiny_onnx)
    folder = SentenceTransformerModel(str(tiny_st), tiny_st, holdout=overlap.external())
    assert graph.heads == {"16": 16, "8": 8} and graph.default_head == folder.default_head == "16"
    expected, actual = folder.encode_uncached(texts(), context), graph.encode_uncached(texts(), context)
    for head in graph.heads:
        assert onnx_graph.cosines(actual[head], expected[head]).min() >= MIN_COSINE, head


def test_fp32_and_int8_graphs_score_beside_the_folder(tiny_st, tiny_onnx, tmp_path):
    int8 = tiny_onnx / onnx_graph.INT8_FILE
    code = main([f"--model={tiny_st}", f"--model={tiny_onnx}", f"--model={int8}", f"--out={tmp_path}", LEE])
    assert code == 0
    rows = {(row["model"], row["head"]): row for row in json.loads((tmp_path / "results.json").read_text())["rows"]}
    assert {head for model, head in rows if model == str(int8)} == {"16", "8"}
    for head in ("16", "8"):
        fp32, folder = rows[(str(tiny_onnx), head)], rows[(str(tiny_st), head)]
        assert fp32["kind"] == "onnx" and fp32["holdout"]["status"] == "external"
        for key, value in folder["metrics"].items():
            assert fp32["metrics"][key] == pytest.approx(value, abs=1e-4), key
        assert np.isfinite(list(rows[(str(int8), head)]["metrics"].values())).all()
    assert rows[(str(int8), "16")]["source"]["graph"].endswith(onnx_graph.INT8_FILE)


def test_a_graph_of_one_head_is_one_row(tiny_st, tmp_path):
    out = onnx_graph.export_onnx(tiny_st, tmp_path / "onnx8", head=8).folder
    graph = OnnxModel(str(out), out)
    assert graph.heads == {"8": 8} and graph.default_head == "8"


def test_a_graph_without_its_export_record_is_refused(tiny_onnx, tmp_path, capsys):
    shutil.copy(tiny_onnx / onnx_graph.MODEL_FILE, tmp_path / "bare.onnx")
    code, err = run(capsys, f"--model={tmp_path / 'bare.onnx'}", f"--out={tmp_path / 'out'}", LEE)
    assert code == 2 and onnx_graph.RECORD_FILE in err and "python -m embed_jax.convert.onnx" in err


def test_a_missing_graph_file_is_named(tiny_onnx, tmp_path, capsys):
    code, err = run(capsys, f"--model={tiny_onnx / 'model_fp16.onnx'}", f"--out={tmp_path}", LEE)
    assert code == 2 and "model_fp16.onnx does not exist" in err


def test_a_graph_whose_source_folder_is_gone_is_unchecked(tiny_onnx, tmp_path, capsys):
    folder = tmp_path / "onnx"
    shutil.copytree(tiny_onnx, folder)
    record = json.loads((folder / onnx_graph.RECORD_FILE).read_text())
    (folder / onnx_graph.RECORD_FILE).write_text(json.dumps({**record, "source": str(tmp_path / "gone")}))
    code, err = run(capsys, f"--model={folder}", f"--out={tmp_path / 'out'}", "--tasks=lee_similarity")
    assert code == 0 and "unchecked" in err and str(tmp_path / "gone") in err
