"""Retrieval scores of quantised vectors: `--quantize=int8,binary` adds one row per model × head × precision.

The vectors are quantised by sentence-transformers' `quantize_embeddings` (sentence_transformers.util.quantization,
6.2), the function a user calls before indexing, and scored the way an index over the codes ranks:

* `float32`: the cosine of the unit vectors (the unquantised row);
* `int8`: each dimension cut into 256 buckets between its minimum and maximum over the *documents* (the corpus
  side's own vectors are the calibration set, `calibration_embeddings`; queries reuse the documents' ranges, and a
  query value outside them is clipped to the end bucket), scored by the integer dot product of the codes: what an
  inner-product index over int8 codes ranks by (sentence-transformers' `semantic_search_usearch`, metric "ip");
  no float rescoring;
* `binary`: one sign bit per dimension (`ubinary`, packed), scored by minus the Hamming distance.

`retrieval_vectors(queries, documents, precision)` returns two float64 matrices whose product is that score, so a
task ranks every precision with the same `queries @ documents.T` (and the same tie rule): for binary the ±1 unpacked
bits, whose dot product is dim - 2·Hamming (the same order as the Hamming distance).
"""
from __future__ import annotations

import numpy as np

from embed_jax.eval import metrics

FLOAT, INT8, BINARY = "float32", "int8", "binary"
QUANTISED = (INT8, BINARY)  # what --quantize accepts


class QuantisationError(ValueError):
    """--quantize names a precision this evaluation does not score; the message lists the ones it does."""


def parse_precisions(value: str) -> tuple[str, ...]:
    """'int8,binary' → ('int8', 'binary'); '' → (); an unknown name is an error naming the flag and the choices."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in QUANTISED]
    if unknown:
        raise QuantisationError(f"--quantize={value}: unknown precision {', '.join(map(repr, unknown))}; give "
                                f"{', '.join(QUANTISED)} (comma-separated), or leave it out for float32 rows only.")
    return tuple(dict.fromkeys(names))


def int8_codes(queries: np.ndarray, documents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query codes, document codes), int8, both on the documents' per-dimension ranges."""
    from sentence_transformers.util.quantization import quantize_embeddings  # torch: only when --quantize asks

    ranges = np.vstack((documents.min(axis=0), documents.max(axis=0)))
    return (quantize_embeddings(queries, INT8, ranges=ranges), quantize_embeddings(documents, INT8, ranges=ranges))


def sign_bits(vectors: np.ndarray) -> np.ndarray:
    """The packed sign bits of sentence-transformers' `ubinary` (uint8, 8 dimensions a byte)."""
    from sentence_transformers.util.quantization import quantize_embeddings  # torch: only when --quantize asks

    return quantize_embeddings(vectors, "ubinary")


def unpacked_signs(packed: np.ndarray, dim: int) -> np.ndarray:
    """±1 float64 per dimension from packed bits (the padding bits of a last byte dropped)."""
    return np.unpackbits(packed, axis=-1)[:, :dim].astype(np.float64) * 2.0 - 1.0


def retrieval_vectors(queries: np.ndarray, documents: np.ndarray, precision: str = FLOAT
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D), float64, such that Q @ D.T is each query's score of each document at `precision`."""
    queries, documents = np.asarray(queries, dtype=np.float32), np.asarray(documents, dtype=np.float32)
    if queries.shape[1] != documents.shape[1]:
        raise ValueError(f"queries are {queries.shape[1]}-d but documents {documents.shape[1]}-d")
    if precision == FLOAT:
        return metrics.unit_rows(queries), metrics.unit_rows(documents)
    if precision == INT8:
        query_codes, document_codes = int8_codes(queries, documents)
        return query_codes.astype(np.float64), document_codes.astype(np.float64)
    if precision == BINARY:
        dim = queries.shape[1]
        return unpacked_signs(sign_bits(queries), dim), unpacked_signs(sign_bits(documents), dim)
    raise QuantisationError(f"unknown precision {precision!r}; the precisions are {FLOAT}, "
                            f"{', '.join(QUANTISED)}")


def bytes_per_vector(dim: int, precision: str) -> int:
    return {FLOAT: 4 * dim, INT8: dim, BINARY: (dim + 7) // 8}[precision]

