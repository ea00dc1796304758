"""Built-in corpora and the evaluation hold-out: nothing held out reaches a training corpus."""
import hashlib
import itertools

import pytest

from embed_jax.data import corpora


def test_wordnet_parse_matches_wordnet_3_0():
    synsets = corpora.read_wordnet()
    assert len(synsets) == 117_659  # synset count of WordNet 3.0 (ASSETS.md)
    assert sum(len(synset.examples) for synset in synsets) == 48_339
    able = next(synset for synset in synsets if synset.key == "a00001740")
    assert able.lemmas == ("able",)
    assert able.definition == "(usually followed by `to') having the necessary means or skill or know-how or " \
                              "authority to do something"
    assert able.examples[:2] == ("able to swim", "she was able to program her computer")


def test_holdout_rule_is_the_documented_hash():
    for synset in corpora.read_wordnet()[:2000]:
        digest = hashlib.sha256(f"wordnet-3.0:{synset.key}".encode()).hexdigest()
        assert corpora.is_held_out_synset(synset.key) == (int(digest[:8], 16) % 1000 < corpora.HOLDOUT_PER_MILLE)


def test_holdout_is_big_enough_for_the_evaluation():
    held_out = corpora.wordnet_holdout()
    assert len(held_out) >= 10_000  # definitions the retrieval corpus needs
    assert sum(1 for synset in held_out if synset.examples) >= 1_000  # synsets with an example query
    assert len(corpora.lee_holdout()) == 50


@pytest.mark.parametrize("name", ["wordnet", "lee_background"])
def test_training_corpora_hold_nothing_held_out(name):
    held_out = corpora.holdout_folded_texts()
    texts = corpora.builtin_texts(name)
    assert texts
    assert not [item for item in texts if corpora.fold(item.text) in held_out]
    assert not [item for item in texts if corpora.is_held_out_record_id(item.id)]
    assert len({item.id for item in texts}) == len(texts)


def test_lee_background_does_not_contain_the_lee_documents():
    background = " ".join(corpora.fold(item.text) for item in corpora.lee_background_texts())
    for _, document in corpora.lee_holdout():
        # Not even the opening 12 words of a scored document appear in the background corpus.
        assert " ".join(corpora.fold(document).split()[:12]) not in background


def test_wordnet_training_texts_are_the_other_synsets():
    texts = corpora.builtin_texts("wordnet")
    synsets = {item.id.split(":")[1] for item in texts}
    assert not any(corpora.is_held_out_synset(key) for key in synsets)
    # Held-out glosses repeated by other synsets are dropped too: fewer texts than the non-held-out synsets carry.
    kept = [synset for synset in corpora.read_wordnet() if not corpora.is_held_out_synset(synset.key)]
    assert len(texts) < sum(1 + len(synset.examples) for synset in kept)


def test_fixed_order_prefixes():
    first = corpora.builtin_texts("wordnet", 50)
    assert first == corpora.builtin_texts("wordnet")[:50]
    assert [item.id for item in first] == sorted((item.id for item in first),
                                                 key=lambda item_id: hashlib.sha256(item_id.encode()).hexdigest())
    with pytest.raises(KeyError, match="'news' is unknown; choose one of"):
        corpora.builtin_texts("news")


def test_the_synset_order_keeps_a_synsets_texts_together():
    texts = corpora.builtin_texts("all", order="synset")
    assert sorted(item.id for item in texts) == sorted(item.id for item in corpora.builtin_texts("all"))
    synset_of = [item.id.split(":")[1] if item.id.startswith("wordnet:") else item.id for item in texts]
    runs = [key for position, key in enumerate(synset_of) if position == 0 or synset_of[position - 1] != key]
    assert len(runs) == len(set(synset_of))  # each synset (or other text) is one contiguous run
    group_hashes = [hashlib.sha256((f"wordnet:{key}" if key[0] in "nvar" and key[1:].isdigit() else key).encode())
                    .hexdigest() for key in runs]
    assert group_hashes == sorted(group_hashes)
    # The first 3,000 texts hold whole synsets with an example and a definition: what a pair stage needs
    # (docs/data.md gives the counts).
    parts = {}
    for item in texts[:3000]:
        if item.id.startswith("wordnet:"):
            parts.setdefault(item.id.split(":")[1], set()).add(item.id.split(":")[2])
    pairs = [key for key, kinds in parts.items() if kinds == {"definition", "example"}
             and not corpora.is_validation_synset(key)]
    assert len(pairs) == 491
    with pytest.raises(KeyError, match="order 'random'; choose one of text, synset"):
        corpora.builtin_texts("all", order="random")


def test_wiki_passages_are_clean_prose():
    from gensim.corpora.wikicorpus import extract_pages
    import bz2

    with bz2.open(corpora.gensim_file(corpora.WIKI_DUMP)) as dump:
        articles = [text for _, text, _ in itertools.islice(extract_pages(dump, filter_namespaces=("0",)), 12)
                    if not text.lstrip().upper().startswith("#REDIRECT")]
    passages = [passage for article in articles[:3] for passage in corpora.wiki_article_passages(article)]
    assert len(passages) > 30
    for passage in passages:
        words = passage.split()
        assert corpora.PASSAGE_MIN_WORDS <= len(words)
        assert len(words) <= corpora.PASSAGE_MAX_WORDS or len(corpora.split_passages(passage)) == 1
        assert "''" not in passage and not passage.startswith(("=", "*", "|", "{"))


def test_passage_split_keeps_sentences_whole():
    sentence = "This is one sentence of seven words."
    paragraph = " ".join([sentence] * 30)
    passages = corpora.split_passages(paragraph, max_words=20)
    assert all(passage.count(".") * 7 == len(passage.split()) <= 20 for passage in passages)
    assert " ".join(passages) == paragraph


def test_missing_wordnet_says_how_to_install(tmp_path):
    with pytest.raises(corpora.CorpusMissingError, match=r"data.noun not found.*apt-get install -y wordnet-base"):
        corpora.read_wordnet(tmp_path)
