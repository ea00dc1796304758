"""A shard's record index: its record ids and a hash of each text, kept in the shard's sidecar.

    sidecar["record_index"] = {"ids": [id, ...], "text_hashes": base64 of little-endian uint64, one per record}

The export writes it beside each shard (records.write_shard), so that every check over ids and texts — the hold-out
checks of training and evaluation, duplicate ids — reads the sidecars (tens of bytes a record) instead of the records
(a 12288-d float16 target is 24 KiB a record: docs/data.md, "At the paper's scale").

A text's hash is the first 8 bytes of blake2b over its folded form (`fold`: case and whitespace folded, the form in
which the hold-out checks compare texts; `corpora.fold` is this one). With 64-bit hashes, 8M records hold an expected n²/2⁶⁵ ≈ 2e-6
colliding pairs: a text match is a match.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

INDEX_KEY = "record_index"
HASH_BYTES = 8
_HASH_DTYPE = np.dtype("<u8")


class IndexFormatError(ValueError):
    """A sidecar's record index is malformed; the caller names the sidecar."""


def fold(text: str) -> str:
    """Whitespace-folded, lower-cased form used to compare training texts with held-out ones."""
    return " ".join(text.split()).lower()


def text_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(fold(text).encode("utf-8"), digest_size=HASH_BYTES).digest(),
                          "little")


def text_hashes(texts: Iterable[str]) -> np.ndarray:
    return np.fromiter((text_hash(text) for text in texts), dtype=np.uint64)


@dataclasses.dataclass(frozen=True, eq=False)
class RecordIndex:
    """One shard's ids and text hashes, in record order."""
    ids: tuple[str, ...]
    text_hashes: np.ndarray  # uint64 (num_records,)

    @classmethod
    def of(cls, ids: Sequence[str], texts: Sequence[str]) -> "RecordIndex":
        return cls(tuple(ids), text_hashes(texts))

    def __len__(self) -> int:
        return len(self.ids)

    def to_json(self) -> dict[str, Any]:
        packed = np.asarray(self.text_hashes, dtype=_HASH_DTYPE).tobytes()
        return {"ids": list(self.ids), "text_hashes": base64.b64encode(packed).decode("ascii")}

    def same_as(self, other: "RecordIndex") -> bool:
        return self.ids == other.ids and np.array_equal(self.text_hashes, other.text_hashes)

    def first_difference(self, other: "RecordIndex") -> int:
        """The first row where the two indexes differ (id or text hash); the shorter length if one is a prefix."""
        for row, (a, b) in enumerate(zip(self.ids, other.ids)):
            if a != b or self.text_hashes[row] != other.text_hashes[row]:
                return row
        return min(len(self), len(other))


def from_json(value: Any) -> RecordIndex:
    """The sidecar's `record_index` value → RecordIndex; IndexFormatError when it is not one."""
    if not isinstance(value, dict) or not isinstance(value.get("ids"), list) \
            or not isinstance(value.get("text_hashes"), str):
        raise IndexFormatError("its record_index is not {\"ids\": [...], \"text_hashes\": \"base64\"}")
    try:
        packed = base64.b64decode(value["text_hashes"], validate=True)
    except (binascii.Error, ValueError) as error:
        raise IndexFormatError(f"its record_index.text_hashes is not base64 ({error})") from None
    hashes = np.frombuffer(packed, dtype=_HASH_DTYPE).astype(np.uint64) if len(packed) % HASH_BYTES == 0 else None
    if hashes is None or len(hashes) != len(value["ids"]):
        raise IndexFormatError(f"its record_index holds {len(value['ids'])} ids and {len(packed) / HASH_BYTES:g} "
                               f"text hashes")
    return RecordIndex(tuple(value["ids"]), hashes)


def read_from_sidecar(sidecar: dict[str, Any]) -> RecordIndex | None:
    """The index a parsed sidecar holds, or None for a sidecar written before indexes were."""
    value = sidecar.get(INDEX_KEY)
    return None if value is None else from_json(value)
