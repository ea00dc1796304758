"""Corpus readers: ids, fields, and errors that name the file, line or config key."""
import os

import ml_collections
import pytest

from embed_jax.data import sources
from embed_jax.data.records import Text
from embed_jax.data.sources import CorpusError


def corpus_config(**fields):
    config = ml_collections.ConfigDict(dict(kind="text", builtin="all", max_texts=None, skip_texts=0, paths="", text_field="text",
                                            id_field="", tfds_name="", tfds_split="train", tfds_data_dir="",
                                            on_decode_error="error"))
    config.update(fields)
    return config


def test_text_files_give_one_text_per_line_with_file_and_line_ids(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.txt").write_text("first line\n\n  \nlast line, no newline")
    (tmp_path / "two.txt").write_bytes(b"windows line\r\nsecond\r\n")
    corpus = sources.open_corpus(corpus_config(paths=f"{tmp_path}/a/*.txt, {tmp_path}/two.txt"))
    assert list(corpus) == [Text("a/one.txt:1", "first line"), Text("a/one.txt:2", ""), Text("a/one.txt:3", "  "),
                            Text("a/one.txt:4", "last line, no newline"), Text("two.txt:1", "windows line"),
                            Text("two.txt:2", "second")]
    assert corpus.count() == 5  # newline count: the ETA's estimate
    assert corpus.describe()["files"][0] == {"path": str(tmp_path / "a" / "one.txt"),
                                             "bytes": (tmp_path / "a" / "one.txt").stat().st_size}


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café\nnaïve\n".encode("utf-8") + "crème brûlée\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=rf"{path}:3: bytes that are not UTF-8 at byte column 3.*iconv.*"
                                          r"on_decode_error=replace"):
        list(sources.open_corpus(corpus_config(paths=str(path))))
    replaced = list(sources.open_corpus(corpus_config(paths=str(path), on_decode_error="replace")))
    assert replaced[2] == Text("latin1.txt:3", "cr\ufffdme br\ufffdl\ufffde")


@pytest.mark.parametrize("make, message", [
    (lambda tmp: f"{tmp}/nothing*.txt", r"corpus.paths: '.*nothing\*.txt' matches no file"),
    (lambda tmp: str(tmp), r"is a folder; give files or a glob"),
    (lambda tmp: "", r"corpus.paths is empty"),
    (lambda tmp: (os.symlink(tmp / "gone", tmp / "dangling.txt"), str(tmp / "dangling.txt"))[1], r"not readable"),
])
def test_missing_or_unreadable_corpus_is_named(tmp_path, make, message):
    with pytest.raises(CorpusError, match=message):
        sources.open_corpus(corpus_config(paths=make(tmp_path)))


def test_jsonl_fields_ids_and_errors(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"doc": 7, "body": "a text"}\n\n{"doc": 8, "body": null}\n')
    corpus = sources.open_corpus(corpus_config(kind="jsonl", paths=str(path), text_field="body", id_field="doc"))
    assert list(corpus) == [Text("7", "a text"), Text("docs.jsonl:2", ""), Text("8", "")]
    positional = sources.open_corpus(corpus_config(kind="jsonl", paths=str(path), text_field="body"))
    assert [item.id for item in positional] == ["docs.jsonl:1", "docs.jsonl:2", "docs.jsonl:3"]
    for content, message in [('{"body": "x"}\n{"body": \n', r"docs.jsonl:2: not JSON"),
                             ('["a list"]\n', r"docs.jsonl:1: a JSON list, expected an object"),
                             ('{"text": "x"}\n',
                              r"docs.jsonl:1: no 'body' field \(corpus.text_field\); fields are 'text'"),
                             ('{"body": 3}\n', r"field 'body' is int, not text"),
                             ('{"body": "x"}\n', r"docs.jsonl:1: no 'doc' field \(corpus.id_field\)")]:
        path.write_text(content)
        with pytest.raises(CorpusError, match=message):
            list(sources.open_corpus(corpus_config(kind="jsonl", paths=str(path), text_field="body",
                                                   id_field="doc" if "'doc'" in message else "")))


def test_parquet_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "part.parquet"
    pq.write_table(pa.table({"passage": ["one", None, "three"], "pid": ["p1", "p2", "p3"]}), path)
    corpus = sources.open_corpus(corpus_config(kind="parquet", paths=str(path), text_field="passage"))
    assert list(corpus) == [Text("part.parquet#0", "one"), Text("part.parquet#1", ""), Text("part.parquet#2", "three")]
    assert corpus.count() == 3
    with_ids = sources.open_corpus(corpus_config(kind="parquet", paths=str(path), text_field="passage", id_field="pid"))
    assert [item.id for item in with_ids] == ["p1", "p2", "p3"]
    with pytest.raises(CorpusError, match=r"no column 'text' \(corpus.text_field\); columns are passage, pid"):
        list(sources.open_corpus(corpus_config(kind="parquet", paths=str(path))))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(CorpusError, match=r"bad.parquet: not a readable Parquet file"):
        list(sources.open_corpus(corpus_config(kind="parquet", paths=str(tmp_path / "bad.parquet"))))


def test_tfds_dataset_through_data_source(tmp_path):
    """A real tfds dataset (array_record, prepared here) read without TensorFlow."""
    import tensorflow_datasets as tfds

    class TinyCaptions(tfds.core.GeneratorBasedBuilder):
        # A builder "outside a package" (ASSETS.md): for a dotted module tfds looks up package resources through
        # importlib_resources, which tensorflow-datasets does not install.
        __module__ = "tiny_captions_builder"
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"caption": tfds.features.Text(), "key": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for index, caption in enumerate(["a dog on a beach", "", "two cats"]):
                yield index, {"caption": caption, "key": f"k{index}"}

    TinyCaptions(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    corpus = sources.open_corpus(corpus_config(kind="tfds", tfds_name="tiny_captions", tfds_data_dir=str(tmp_path),
                                               text_field="caption"))
    # tfds stores examples in its own (hashed) order; ids are positions in that order.
    assert [item.id for item in corpus] == [f"tiny_captions/train/{index}" for index in range(3)]
    assert sorted(item.text for item in corpus) == ["", "a dog on a beach", "two cats"]
    assert corpus.count() == 3
    keyed = sources.open_corpus(corpus_config(kind="tfds", tfds_name="tiny_captions", tfds_data_dir=str(tmp_path),
                                              text_field="caption", id_field="key"))
    assert sorted(item.id for item in keyed) == ["k0", "k1", "k2"]
    with pytest.raises(CorpusError, match=r"corpus.tfds_name='no_such_set'.*no download is attempted"):
        sources.open_corpus(corpus_config(kind="tfds", tfds_name="no_such_set", tfds_data_dir=str(tmp_path)))
    with pytest.raises(CorpusError, match=r"corpus.tfds_name is empty"):
        sources.open_corpus(corpus_config(kind="tfds"))


def test_builtin_corpus_and_config_errors():
    corpus = sources.open_corpus(corpus_config(kind="builtin", builtin="lee_background", max_texts=5))
    assert corpus.count() == 5 and len(list(corpus)) == 5
    assert corpus.describe()["name"] == "lee_background"
    for fields, message in [(dict(kind="csv"), r"corpus.kind='csv'"),
                            (dict(kind="builtin", builtin="news"), r"corpus.builtin='news' is not a built-in"),
                            (dict(kind="builtin", max_texts=0), r"corpus.max_texts=0 must be positive"),
                            (dict(on_decode_error="ignore"), r"corpus.on_decode_error='ignore'")]:
        with pytest.raises(CorpusError, match=message):
            sources.open_corpus(corpus_config(**fields))


def test_builtin_skip_texts_takes_the_next_disjoint_slice():
    first = list(sources.open_corpus(corpus_config(kind="builtin", builtin="lee_background", max_texts=5)))
    following = sources.open_corpus(corpus_config(kind="builtin", builtin="lee_background", max_texts=3,
                                                  skip_texts=4))
    assert [item.id for item in following][:1] == [first[4].id]
    assert following.count() == 3 and following.describe()["skip_texts"] == 4
    # Without skip_texts the description (part of an export's identity) is what it was before the option existed.
    assert "skip_texts" not in sources.open_corpus(corpus_config(kind="builtin", builtin="lee_background")).describe()
    for skip, message in [(-1, r"corpus.skip_texts=-1 must be 0 or positive"),
                          (300, r"corpus.skip_texts=300 skips every text: built-in corpus 'lee_background' has 300")]:
        with pytest.raises(CorpusError, match=message):
            sources.open_corpus(corpus_config(kind="builtin", builtin="lee_background", skip_texts=skip)).count()


def test_builtin_order_is_part_of_the_export_identity_and_checked():
    by_synset = sources.open_corpus(corpus_config(kind="builtin", builtin="wordnet", max_texts=4, order="synset"))
    assert by_synset.describe()["order"] == "synset"
    # The text order is the one exports had before the option: their description stays as it was.
    assert "order" not in sources.open_corpus(corpus_config(kind="builtin", builtin="wordnet", order="text")).describe()
    with pytest.raises(CorpusError, match=r"corpus.order='random'; choose one of text, synset"):
        sources.open_corpus(corpus_config(kind="builtin", builtin="wordnet", order="random"))
