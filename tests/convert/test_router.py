"""The asymmetric setup as one folder: a sentence-transformers Router (queries → the exported MiniLM student's FC1,
documents → all-MiniLM-L6-v2 + all-mpnet-base-v2 concatenated at 0.15/0.85) loads offline and scores, with
encode_query / encode_document, what `python -m embed_jax.eval --model=asym:...` scores; missing teachers are one
line."""
import json
import shutil

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from embed_jax.convert import hf_export, router
from embed_jax.data.corpora import wordnet_holdout
from embed_jax.eval.encoding import EncodeContext, documents_key, encode
from embed_jax.eval.specs import ModelLoader

TEACHERS = ["asset:all-MiniLM-L6-v2", "asset:all-mpnet-base-v2"]


@pytest.fixture(scope="module")
def texts():
    synsets = [synset for synset in wordnet_holdout()[:200] if synset.examples][:12]
    return [synset.examples[0] for synset in synsets], [synset.definition for synset in synsets]


def test_router_scores_what_asym_scores(minilm_export, tmp_path, texts):
    queries, documents = texts
    folder = router.build(minilm_export, tmp_path / "router", documents=TEACHERS, weights=[0.15, 0.85])
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True, trust_remote_code=True)
    scores = model.encode_query(queries) @ model.encode_document(documents).T

    spec = f"asym:{minilm_export}|concat:{'+'.join(TEACHERS)}@0.15,0.85"
    asym = ModelLoader(EncodeContext(cache_dir=None, progress_every_s=1e9)).load(spec)
    (head,) = asym.heads
    query_vectors = encode(asym, queries, EncodeContext(progress_every_s=1e9))[head]
    document_vectors = encode(asym, documents, EncodeContext(progress_every_s=1e9))[documents_key(head)]
    expected = query_vectors @ document_vectors.T
    assert scores.shape == (len(queries), len(documents))
    np.testing.assert_allclose(scores, expected, atol=2e-6)
    assert (np.argsort(-scores, axis=1)[:, :3] == np.argsort(-expected, axis=1)[:, :3]).all()


def test_a_single_document_model_needs_no_custom_code(minilm_export, tmp_path):
    """One document model: the Router holds only sentence-transformers' own modules."""
    with pytest.raises(router.RouterError, match=r"gives 1152-d vectors but the document models .* 384-d"):
        router.build(minilm_export, tmp_path / "r", documents=[TEACHERS[0]])
    assert not (tmp_path / "r").exists()


def test_missing_teachers_are_one_line(minilm_export, tmp_path):
    student = tmp_path / "student"
    shutil.copytree(minilm_export, student)
    record = json.loads((student / hf_export.EXPORT_FILE).read_text())
    record["teachers"] = [{"name": "big", "path": "../teachers/big-model", "order": 0}]
    (student / hf_export.EXPORT_FILE).write_text(json.dumps(record))
    with pytest.raises(router.RouterError, match=r"teachers\): the document model '../teachers/big-model' has no "
                                                 r"sentence-transformers folder at .*big-model") as error:
        router.build(student, tmp_path / "router")
    assert "\n" not in str(error.value) and not (tmp_path / "router").exists()
    code = router.main([f"--queries={student}", f"--out={tmp_path / 'router'}"])
    assert code == router.EXIT_CODE
