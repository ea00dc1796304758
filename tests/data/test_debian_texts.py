"""The Debian prose corpora: real texts, disjoint hold-outs by unit, stable order, and a clear error when missing."""
from pathlib import Path

import pytest

from embed_jax.data import corpora, debian_texts, sources


def test_bible_passages_pack_whole_verses_of_one_chapter():
    texts = corpora.builtin_texts("bible")
    assert 8_000 < len(texts) < 10_000  # 31,102 verses, ~3.4 per passage, a tenth of the chapters held out
    assert all(len(item.text.split()) <= debian_texts.PASSAGE_MAX_WORDS for item in texts)
    genesis = [item for item in debian_texts.bible_texts() if item.id.startswith("bible:Ge 1:")]
    if genesis:  # unless Genesis 1 is itself held out
        assert genesis[0].text.startswith("In the beginning God created the heaven and the earth.")


def test_verses_pack_greedily_and_a_long_verse_stands_alone():
    verses = [(1, "a b c"), (2, "d e"), (3, "f g h i j k"), (4, "l")]
    assert debian_texts.pack_verses(verses, max_words=5) == [(1, "a b c d e"), (3, "f g h i j k"), (4, "l")]


def test_holdouts_are_disjoint_from_training_and_about_a_tenth():
    for train, held in ((debian_texts.bible_texts(), debian_texts.bible_passages(held_out=True)),
                        (debian_texts.fortune_texts(), debian_texts.fortune_texts(held_out=True))):
        train_ids, held_ids = {item.id for item in train}, {item.id for item in held}
        assert not train_ids & held_ids
        assert 0.07 < len(held_ids) / (len(held_ids) + len(train_ids)) < 0.13
        assert all(corpora.is_held_out_record_id(record_id) for record_id in held_ids)
        assert not any(corpora.is_held_out_record_id(record_id) for record_id in train_ids)


def test_fortunes_leave_ascii_art_out():
    assert debian_texts.is_prose("A friend is a present you give yourself. -- Robert Louis Stevenson")
    assert not debian_texts.is_prose("  /\\_/\\  \n ( o.o ) \n  > ^ <  \n ||||| ---- ||||")
    texts = corpora.builtin_texts("fortunes")
    assert len(texts) > 10_000 and all(item.text == " ".join(item.text.split()) for item in texts)


def test_joined_names_are_the_union_in_the_fixed_order():
    joined = corpora.builtin_texts("lee_background+fortunes")
    parts = corpora.builtin_texts("lee_background") + corpora.builtin_texts("fortunes")
    assert sorted(item.id for item in joined) == sorted(item.id for item in parts)
    assert list(joined) == sorted(joined, key=lambda item: corpora._text_order_key(item))


def test_an_unknown_part_of_a_joined_name_is_named():
    with pytest.raises(sources.CorpusError, match=r"corpus.builtin='all\+bibel'.*'bibel'.*all\+bible\+fortunes"):
        sources.BuiltinCorpus("all+bibel", None)


def test_a_missing_debian_package_names_the_package_and_the_install_command(monkeypatch, tmp_path):
    corpora._builtin_texts_ordered.cache_clear()  # texts read by earlier tests are cached per process
    monkeypatch.setattr(debian_texts, "FORTUNES_DIR", tmp_path / "no-fortunes")
    with pytest.raises(sources.CorpusError, match=r"corpus.builtin='fortunes'.*apt-get install -y fortunes"):
        list(sources.BuiltinCorpus("fortunes", 10))
    monkeypatch.setattr(debian_texts, "BIBLE_PROGRAM", str(tmp_path / "no-bible"))
    with pytest.raises(debian_texts.DebianTextMissingError, match=r"apt-get install -y bible-kjv bible-kjv-text"):
        debian_texts.read_bible_verses()
    corpora._builtin_texts_ordered.cache_clear()
