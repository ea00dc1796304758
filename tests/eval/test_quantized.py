"""Quantised retrieval scores against brute-force references on small hand-made vectors, and --quantize's bad
input."""
import numpy as np
import pytest

from embed_jax.eval import __main__ as eval_main
from embed_jax.eval import metrics, quantized
from embed_jax.eval.tasks import TextVectors

DOCUMENTS = np.array([[0.0, -1.0, 0.5], [1.0, 0.0, 0.25], [0.5, 1.0, 0.0], [0.25, -0.5, 1.0]], dtype=np.float32)
# The second query leaves the documents' range in two dimensions: its codes clip to the end buckets.
QUERIES = np.array([[0.5, 0.0, 0.5], [2.0, -3.0, 0.75]], dtype=np.float32)


def brute_force_int8(vector, low, high):
    """One vector's int8 codes, one dimension at a time: 256 buckets between the documents' min and max."""
    codes = []
    for value, start, end in zip(vector, low, high):  # float32 arithmetic, as the vectors are
        step = np.float32(end - start) / np.float32(255)
        bucket = int(np.floor(np.float32(value - start) / step))
        codes.append(min(max(bucket, 0), 255) - 128)
    return codes


def test_int8_scores_are_the_dot_products_of_codes_calibrated_on_the_documents():
    low, high = DOCUMENTS.min(axis=0), DOCUMENTS.max(axis=0)
    query_codes = [brute_force_int8(query, low, high) for query in QUERIES]
    document_codes = [brute_force_int8(document, low, high) for document in DOCUMENTS]
    assert query_codes[1][:2] == [127, -128]
    assert document_codes[0] == [-128, -128, -1]  # 0.5 sits in bucket 127 of [0, 1]
    expected = np.array([[sum(q * d for q, d in zip(query, document)) for document in document_codes]
                         for query in query_codes], dtype=np.float64)
    queries, documents = quantized.retrieval_vectors(QUERIES, DOCUMENTS, quantized.INT8)
    np.testing.assert_array_equal(queries @ documents.T, expected)


def test_binary_scores_rank_by_hamming_distance_of_the_sign_bits():
    rng = np.random.default_rng(0)
    dim = 10  # not a multiple of 8: the padding bits of the last byte must not count
    queries_float, documents_float = rng.standard_normal((3, dim)), rng.standard_normal((7, dim))
    hamming = np.array([[sum((q > 0) != (d > 0) for q, d in zip(query, document)) for document in documents_float]
                        for query in queries_float])
    queries, documents = quantized.retrieval_vectors(queries_float, documents_float, quantized.BINARY)
    scores = queries @ documents.T
    np.testing.assert_array_equal(scores, dim - 2 * hamming)
    relevant = np.array([0, 3, 6])
    brute_ranks = [1 + sum(hamming[row, other] < hamming[row, relevant[row]] or
                           (hamming[row, other] == hamming[row, relevant[row]] and other < relevant[row])
                           for other in range(len(documents_float)) if other != relevant[row])
                   for row in range(len(queries_float))]
    np.testing.assert_array_equal(metrics.rank_of_relevant(scores, relevant), brute_ranks)


def test_float32_is_the_cosine_and_the_document_side_may_come_from_another_model():
    texts = ["q0", "q1", "d0", "d1", "d2", "d3"]
    index = {text: row for row, text in enumerate(texts)}
    query_model = np.vstack([QUERIES, np.zeros((4, 3))]).astype(np.float32)
    document_model = np.vstack([np.zeros((2, 3)), DOCUMENTS]).astype(np.float32)
    vectors = TextVectors(index, query_model, documents=document_model)
    queries, documents = vectors.retrieval(["q0", "q1"], ["d0", "d1", "d2", "d3"])
    np.testing.assert_allclose(queries @ documents.T, metrics.cosine_matrix(QUERIES, DOCUMENTS), atol=1e-12)
    quantised = TextVectors(index, query_model, documents=document_model, precision=quantized.INT8)
    queries, documents = quantised.retrieval(["q0", "q1"], ["d0", "d1", "d2", "d3"])
    reference_queries, reference_documents = quantized.retrieval_vectors(QUERIES, DOCUMENTS, quantized.INT8)
    np.testing.assert_array_equal(queries @ documents.T, reference_queries @ reference_documents.T)


def test_precisions_parse_and_an_unknown_one_names_the_flag_and_the_choices(tmp_path, capsys):
    assert quantized.parse_precisions("int8, binary,int8") == ("int8", "binary")
    assert quantized.parse_precisions("") == ()
    with pytest.raises(quantized.QuantisationError, match=r"--quantize=int8,int4: unknown precision 'int4'; give "
                                                          r"int8, binary"):
        quantized.parse_precisions("int8,int4")
    code = eval_main.main(["--model=asset:all-MiniLM-L6-v2", f"--out={tmp_path}", "--quantize=float16"])
    assert code != 0
    assert "--quantize=float16: unknown precision 'float16'" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_vectors_of_two_dimensions_are_refused():
    with pytest.raises(ValueError, match="queries are 3-d but documents 2-d"):
        quantized.retrieval_vectors(QUERIES, DOCUMENTS[:, :2])
