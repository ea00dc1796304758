"""Corpus readers: where the texts of a teacher export come from.

Every reader yields `records.Text(id, text)` in a fixed order and says what it is (`describe()`, stored in the
manifest and compared when an export resumes) and, cheaply, how many texts it holds (`count()`, for the ETA).

| kind      | config keys (under `corpus.`)                  | one text is                  | id when no id field      |
|-----------|------------------------------------------------|------------------------------|--------------------------|
| `text`    | paths                                          | a line                       | `<file>:<line>`          |
| `jsonl`   | paths, text_field, id_field                    | the text field of a line     | `<file>:<line>`          |
| `parquet` | paths, text_field, id_field                    | the text column of a row     | `<file>#<row>`           |
| `tfds`    | tfds_name, tfds_split, tfds_data_dir,          | the text feature of an       | `<name>/<split>/<index>` |
|           | text_field, id_field                           | example (no TensorFlow)      |                          |
| `builtin` | builtin, max_texts, skip_texts, order          | see `corpora`                | see `corpora`            |

`paths` is a comma-separated list of files or glob patterns, matched in sorted order. `<file>` is the file's path
relative to the folder that holds all matched files. Lines and rows count from 1 and 0 respectively.

Bytes that are not UTF-8: by default an error that names the file and line (`corpus.on_decode_error="error"`);
with `"replace"`, each bad byte becomes U+FFFD and the export goes on (Python's "replace" error handler).
Empty or whitespace-only texts are yielded as they are; the export skips and counts them.
"""
from __future__ import annotations

import glob
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Protocol

from embed_jax.data import corpora, debian_texts
from embed_jax.data.records import Text

KINDS = ("builtin", "text", "jsonl", "parquet", "tfds")
DECODE_POLICIES = ("error", "replace")


# A UTF-16 surrogate code point without its pair: what a JSON "\ud800" escape decodes to.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class CorpusError(ValueError):
    """The corpus cannot be read; the message names the config key, file or line, and what to do."""


class Corpus(Protocol):
    def describe(self) -> dict[str, Any]: ...

    def count(self) -> int | None: ...

    def __iter__(self) -> Iterator[Text]: ...


# ------------------------------------------------------------------------------------------------------- files


def expand_paths(patterns: str, *, key: str = "corpus.paths") -> list[Path]:
    """Comma-separated files or globs → existing, readable files, in order; errors name the pattern."""
    files: list[Path] = []
    for pattern in (part.strip() for part in patterns.split(",")):
        if not pattern:
            continue
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not matches:
            raise CorpusError(f"{key}: {pattern!r} matches no file (working directory {os.getcwd()}). "
                              f"Check the path, or pass an absolute one.")
        for match in map(Path, matches):
            if match.is_dir():
                raise CorpusError(f"{key}: {match} is a folder; give files or a glob such as {match}/*.txt.")
            if not os.access(match, os.R_OK):
                raise CorpusError(f"{key}: {match} is not readable (permissions); fix them with chmod, or copy it.")
            files.append(match.resolve())
    if not files:
        raise CorpusError(f"{key} is empty; give one or more files, e.g. --config.corpus.paths=texts/*.txt.")
    return files


def file_labels(files: list[Path]) -> list[str]:
    """Each file's path relative to the deepest folder holding them all (its name, for one file)."""
    root = Path(os.path.commonpath([file.parent for file in files]))
    return [str(file.relative_to(root)) for file in files]


def decode_line(raw: bytes, *, file: Path, line_number: int, policy: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        if policy == "replace":
            return raw.decode("utf-8", errors="replace")
        raise CorpusError(
            f"{file}:{line_number}: bytes that are not UTF-8 at byte column {error.start + 1} "
            f"({raw[error.start:error.end]!r})."
            f" Convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or set "
            f"--config.corpus.on_decode_error=replace to replace such bytes with U+FFFD.") from None


def read_lines(file: Path, policy: str) -> Iterator[tuple[int, str]]:
    """(line number from 1, decoded line without its end-of-line) for one file."""
    try:
        handle = file.open("rb")
    except OSError as error:
        raise CorpusError(f"{file}: cannot open ({error.strerror}).") from error
    with handle:
        for line_number, raw in enumerate(handle, start=1):
            yield line_number, decode_line(raw.rstrip(b"\r\n"), file=file, line_number=line_number, policy=policy)


def _files_description(kind: str, files: list[Path], **options: Any) -> dict[str, Any]:
    return {"kind": kind, "files": [{"path": str(file), "bytes": file.stat().st_size} for file in files], **options}


def _count_lines(files: list[Path]) -> int:
    total = 0
    for file in files:
        with file.open("rb") as handle:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return total


class TextFiles:
    """One text per line."""

    def __init__(self, files: list[Path], on_decode_error: str = "error"):
        self.files, self.on_decode_error = files, on_decode_error

    def describe(self) -> dict[str, Any]:
        return _files_description("text", self.files, on_decode_error=self.on_decode_error)

    def count(self) -> int:
        return _count_lines(self.files)

    def __iter__(self) -> Iterator[Text]:
        for file, label in zip(self.files, file_labels(self.files)):
            for line_number, line in read_lines(file, self.on_decode_error):
                yield Text(f"{label}:{line_number}", line)


def record_id(record: dict[str, Any], id_field: str, fallback: str, *, where: str) -> str:
    if not id_field:
        return fallback
    if id_field not in record or record[id_field] is None:
        raise CorpusError(f"{where}: no {id_field!r} field (corpus.id_field). Add ids to every record, or set "
                          f"--config.corpus.id_field='' to use positions as ids.")
    value = record[id_field]
    return value.decode("utf-8", errors="backslashreplace") if isinstance(value, bytes) else str(value)


def record_text(record: dict[str, Any], text_field: str, *, where: str) -> str:
    if text_field not in record:
        raise CorpusError(f"{where}: no {text_field!r} field (corpus.text_field); fields are "
                          f"{', '.join(map(repr, record)) or 'none'}.")
    value = record[text_field]
    if value is None:  # a null text counts as empty: skipped and counted
        return ""
    if isinstance(value, bytes):  # tfds stores text features as bytes
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise CorpusError(f"{where}: field {text_field!r} holds bytes that are not UTF-8 ({error.reason} at "
                              f"byte {error.start}).") from None
    if not isinstance(value, str):
        raise CorpusError(f"{where}: field {text_field!r} is {type(value).__name__}, not text.")
    surrogate = LONE_SURROGATE.search(value)
    if surrogate is not None:  # JSON's \uD800-\uDFFF escapes decode to halves of a pair, which no UTF-8 file holds
        raise CorpusError(f"{where}: field {text_field!r} holds a lone surrogate escape "
                          f"({surrogate.group().encode('unicode_escape').decode()} at character "
                          f"{surrogate.start() + 1}), half of a UTF-16 pair and no character: the text cannot be "
                          "tokenised or stored. Fix that line (e.g. write the character itself, or \\ufffd).")
    return value


class JsonlFiles:
    """One JSON object per line; the text in `text_field`, the id in `id_field` (or the position)."""

    def __init__(self, files: list[Path], text_field: str, id_field: str, on_decode_error: str = "error"):
        self.files, self.text_field, self.id_field = files, text_field, id_field
        self.on_decode_error = on_decode_error

    def describe(self) -> dict[str, Any]:
        return _files_description("jsonl", self.files, text_field=self.text_field, id_field=self.id_field,
                                  on_decode_error=self.on_decode_error)

    def count(self) -> int:
        return _count_lines(self.files)

    def __iter__(self) -> Iterator[Text]:
        for file, label in zip(self.files, file_labels(self.files)):
            for line_number, line in read_lines(file, self.on_decode_error):
                position = f"{label}:{line_number}"
                if not line.strip():
                    yield Text(position, "")
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise CorpusError(f"{file}:{line_number}: not JSON ({error.msg} at column {error.colno})."
                                      ) from None
                if not isinstance(record, dict):
                    raise CorpusError(f"{file}:{line_number}: a JSON {type(record).__name__}, expected an object.")
                where = f"{file}:{line_number}"
                yield Text(record_id(record, self.id_field, position, where=where),
                           record_text(record, self.text_field, where=where))


class ParquetFiles:
    """The `text_field` column of every row (pyarrow, which tensorflow-datasets brings)."""

    def __init__(self, files: list[Path], text_field: str, id_field: str):
        self.files, self.text_field, self.id_field = files, text_field, id_field

    def describe(self) -> dict[str, Any]:
        return _files_description("parquet", self.files, text_field=self.text_field, id_field=self.id_field)

    def _open(self, file: Path):
        import pyarrow.parquet

        try:
            parquet = pyarrow.parquet.ParquetFile(file)
        except Exception as error:  # pyarrow raises ArrowInvalid/OSError subclasses for damaged files
            raise CorpusError(f"{file}: not a readable Parquet file ({error}).") from error
        columns = parquet.schema_arrow.names
        for key, field in (("corpus.text_field", self.text_field), ("corpus.id_field", self.id_field)):
            if field and field not in columns:
                raise CorpusError(f"{file}: no column {field!r} ({key}); columns are {', '.join(columns)}.")
        return parquet

    def count(self) -> int:
        return sum(self._open(file).metadata.num_rows for file in self.files)

    def __iter__(self) -> Iterator[Text]:
        for file, label in zip(self.files, file_labels(self.files)):
            parquet = self._open(file)
            columns = [self.text_field] + ([self.id_field] if self.id_field else [])
            row = 0
            for batch in parquet.iter_batches(columns=columns, batch_size=4096):
                for record in batch.to_pylist():
                    where = f"{file} row {row}"
                    yield Text(record_id(record, self.id_field, f"{label}#{row}", where=where),
                               record_text(record, self.text_field, where=where))
                    row += 1


# -------------------------------------------------------------------------------------------------------- tfds


def first_line(error: Exception) -> str:
    """tfds errors append the whole list of its datasets; the first line is the part that helps."""
    return (str(error).strip().splitlines() or [""])[0][:300]



class TfdsCorpus:
    """A prepared tfds dataset read through `tfds.data_source` (random access, no TensorFlow)."""

    def __init__(self, name: str, split: str, data_dir: str, text_field: str, id_field: str):
        self.name, self.split, self.data_dir = name, split, data_dir
        self.text_field, self.id_field = text_field, id_field
        self._source = self._open()

    def _open(self):
        import tensorflow_datasets as tfds

        try:
            return tfds.data_source(self.name, split=self.split, data_dir=self.data_dir or None, download=False)
        except Exception as error:  # tfds raises its own DatasetNotFoundError/AssertionError/ValueError family
            raise CorpusError(
                f"corpus.tfds_name={self.name!r}, corpus.tfds_split={self.split!r}, corpus.tfds_data_dir="
                f"{self.data_dir!r}: cannot open it ({type(error).__name__}: {first_line(error)}). Prepare the "
                f"dataset (array_record format) under that data_dir first; no download is attempted.") from error

    def describe(self) -> dict[str, Any]:
        return {"kind": "tfds", "name": self.name, "split": self.split, "num_examples": len(self._source),
                "text_field": self.text_field, "id_field": self.id_field}

    def count(self) -> int:
        return len(self._source)

    def __iter__(self) -> Iterator[Text]:
        for index in range(len(self._source)):
            example = self._source[index]
            where = f"tfds {self.name}/{self.split} example {index}"
            yield Text(record_id(example, self.id_field, f"{self.name}/{self.split}/{index}", where=where),
                       record_text(example, self.text_field, where=where))


# ---------------------------------------------------------------------------------------------------- built-in


class BuiltinCorpus:
    """The built-in training texts in a fixed (hash) order: texts[skip_texts : skip_texts + max_texts].

    skip_texts makes a second, disjoint slice of the same order, e.g. validation records for the loss-curve eval
    (configs/teachers.py:eval): the first N texts train, the next M measure. `order` is one of corpora.ORDERS
    ('synset' keeps each WordNet synset's texts together, for a pair stage).
    """

    def __init__(self, name: str, max_texts: int | None, skip_texts: int = 0, order: str = "text"):
        try:
            corpora.corpus_readers(name)
        except KeyError as error:
            raise CorpusError(f"corpus.builtin={name!r} is not a built-in corpus name: {error.args[0]}") from None
        if max_texts is not None and max_texts <= 0:
            raise CorpusError(f"corpus.max_texts={max_texts} must be positive, or None for the whole corpus.")
        if skip_texts < 0:
            raise CorpusError(f"corpus.skip_texts={skip_texts} must be 0 or positive.")
        if order not in corpora.ORDERS:
            raise CorpusError(f"corpus.order={order!r}; choose one of {', '.join(corpora.ORDERS)}.")
        self.name, self.max_texts, self.skip_texts, self.order = name, max_texts, skip_texts, order

    def describe(self) -> dict[str, Any]:
        description = {"kind": "builtin", "name": self.name, "max_texts": self.max_texts,
                       "holdout": f"lee.cor; WordNet synsets with sha256 per mille < {corpora.HOLDOUT_PER_MILLE}"}
        if {"bible", "fortunes"} & set(self.name.split("+")):  # only then: older exports keep their identity
            description["holdout"] += (f"; Bible chapters and fortune entries with sha256 per mille < "
                                       f"{debian_texts.HOLDOUT_PER_MILLE}")
        if self.skip_texts:  # only when set: exports made before the option keep their identity
            description["skip_texts"] = self.skip_texts
        if self.order != "text":  # likewise
            description["order"] = self.order
        return description

    def _texts(self) -> tuple[Text, ...]:
        try:
            texts = corpora.builtin_texts(self.name, order=self.order)
        except (corpora.CorpusMissingError, debian_texts.DebianTextMissingError) as error:
            raise CorpusError(f"corpus.builtin={self.name!r}: {error}") from error
        end = None if self.max_texts is None else self.skip_texts + self.max_texts
        if self.skip_texts >= len(texts):
            raise CorpusError(f"corpus.skip_texts={self.skip_texts} skips every text: built-in corpus "
                              f"{self.name!r} has {len(texts):,}.")
        return texts[self.skip_texts:end]

    def count(self) -> int:
        return len(self._texts())

    def __iter__(self) -> Iterator[Text]:
        return iter(self._texts())


# ------------------------------------------------------------------------------------------------ from config


def open_corpus(config) -> Corpus:
    """The corpus that `config` (the `corpus` ConfigDict) names; every error names its config key."""
    kind = config.kind
    if kind not in KINDS:
        raise CorpusError(f"corpus.kind={kind!r}; choose one of {', '.join(KINDS)}.")
    policy = config.get("on_decode_error", "error")
    if policy not in DECODE_POLICIES:
        raise CorpusError(f"corpus.on_decode_error={policy!r}; choose one of {', '.join(DECODE_POLICIES)}.")
    if kind == "builtin":
        return BuiltinCorpus(config.builtin, config.get("max_texts"), config.get("skip_texts", 0) or 0,
                             config.get("order", "text"))
    if kind == "tfds":
        if not config.tfds_name:
            raise CorpusError("corpus.tfds_name is empty; name the tfds dataset, e.g. "
                              "--config.corpus.tfds_name=ag_news_subset.")
        return TfdsCorpus(config.tfds_name, config.tfds_split, config.tfds_data_dir, config.text_field,
                          config.id_field)
    files = expand_paths(config.paths)
    if kind == "text":
        return TextFiles(files, policy)
    if kind == "jsonl":
        return JsonlFiles(files, config.text_field, config.id_field, policy)
    return ParquetFiles(files, config.text_field, config.id_field)
