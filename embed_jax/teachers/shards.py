"""The corpus as the export cuts it: kept texts in corpus order, `shard_size` to a shard, with the running hash.

Empty or whitespace-only texts are skipped and counted; a repeated id is refused, and so is a corpus with no other
text (`require_a_text`, before any teacher loads: docs/data.md lists it among the refusals). Every worker of an export and its
dry run read the corpus through this one cut, so they agree on every shard's texts.
"""
from __future__ import annotations

from embed_jax.data import records, sources
from embed_jax.data.records import Text


class ExportError(ValueError):
    """The export configuration or corpus contents are wrong; the message names the key or record."""


class ShardedCorpus:
    """Streams the corpus into shards of kept texts, skipping and counting empty ones, refusing duplicate ids."""

    def __init__(self, corpus: sources.Corpus, shard_size: int):
        self.corpus, self.shard_size = corpus, shard_size
        self.skipped_empty = 0
        self.hasher = records.corpus_hasher()

    def __iter__(self):
        seen_ids: set[str] = set()
        pending: list[Text] = []
        for item in self.corpus:
            if not item.text.strip():
                self.skipped_empty += 1
                continue
            if item.id in seen_ids:
                raise ExportError(f"corpus: id {item.id!r} appears twice; ids must be unique so that every vector "
                                  f"stays aligned with its text. Fix the ids, or set --config.corpus.id_field='' "
                                  f"to use positions.")
            seen_ids.add(item.id)
            records.update_corpus_hash(self.hasher, [item])
            pending.append(item)
            if len(pending) == self.shard_size:
                yield pending, self.hasher.hexdigest()
                pending = []
        if pending:
            yield pending, self.hasher.hexdigest()


def where(corpus: sources.Corpus) -> str:
    """The corpus as a user named it: its files, or its built-in or tfds name."""
    description = corpus.describe()
    if description.get("files"):
        return ", ".join(str(file["path"]) for file in description["files"])
    return f"{description['kind']} {description.get('name', '')}".strip()


def require_a_text(corpus: sources.Corpus) -> None:
    """Refuse a corpus whose every text is empty or whitespace-only: its export would hold 0 records."""
    scanned = 0
    for item in corpus:
        if item.text.strip():
            return
        scanned += 1
    raise ExportError(f"corpus ({where(corpus)}): no text to export, its {scanned} texts are all empty or "
                      f"whitespace-only. Check corpus.paths (or corpus.builtin / tfds_name) and corpus.text_field.")
