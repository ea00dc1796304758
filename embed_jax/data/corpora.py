"""Built-in corpora (real English text that installs without a hub) and the evaluation hold-out.

Training corpora (../shared/ASSETS.md):

* `wiki`: gensim's Wikipedia dump slice (100 articles): prose paragraphs after `filter_wiki`, split at sentence
  ends into passages of at most PASSAGE_MAX_WORDS words. Id `wiki:<page id>:<passage number>`.
* `lee_background`: gensim's 300 ABC-news background documents. Id `lee_background:<line number>`.
* `wordnet`: WordNet 3.0 definitions and usage examples of the synsets that are NOT held out. Ids
  `wordnet:<synset key>:definition` and `wordnet:<synset key>:example:<k>`; a synset key is the part of speech of
  its data file (n, v, a, r) followed by its 8-digit byte offset, e.g. `n02084071`.
* `all`: the three together.
* `bible`, `fortunes`: English prose from Debian's archive (embed_jax/data/debian_texts.py, each with its own
  hold-out rule).

Names join with `+` (`all+bible+fortunes`): the union of the parts, in the same fixed order.

Evaluation hold-out, kept out of every built-in training corpus from the start:

* the 50 Lee documents (`lee.cor`, Lee et al. 2005) that the human similarity matrix scores; lee_background does
  not contain them (checked by tests/data/test_corpora.py);
* the WordNet synsets for which `is_held_out_synset(key)` is true: sha256("wordnet-3.0:" + key), read as a
  big-endian integer from its first 8 hex digits, modulo 1000, below HOLDOUT_PER_MILLE. About 10% of synsets:
  11,812 definitions and 4,886 examples (from 3,308 synsets), enough for the evaluation's 10,000 definitions and
  1,000 example queries whose synsets training never saw. The rule depends on nothing but the key, so it is the
  same on every machine and for every corpus size.

Validation split (not a hold-out: its texts stay in the `wordnet` training corpus), for choosing recipe knobs such as
the teachers' weights (docs/training.md) without looking at the evaluation hold-out: the training-side synsets with
`is_validation_synset(key)`, the same rule under another salt (sha256("wordnet-3.0-validation:" + key), below
VALIDATION_PER_MILLE): about 9% of all synsets, giving the same task shape as the hold-out (embed_jax/eval/wordnet.py).

Besides, any training text equal (after whitespace folding and lower-casing) to a held-out text is dropped: WordNet
repeats some glosses across synsets ("a variety of aster"), and a repeated gloss would leak a held-out answer
(314 WordNet texts are dropped so). Sizes: wiki 7,421 passages, lee_background 300, wordnet 148,986, all 156,707.

Every built-in corpus yields its texts in a fixed pseudo-random order, so that a prefix of `max_texts` texts is a
uniform mix of the sources and a bigger export extends a smaller one. Two orders (ORDERS):

* `text`: sha256 of each text's id. A synset's definition and its usage examples land far apart, so a prefix of a few
  thousand texts holds almost no whole synset (3,000 texts: 14 outside the validation split).
* `synset`: sha256 of the synset key for WordNet texts (of the id for the rest), the synset's texts adjacent in id
  order. A prefix keeps its synsets whole, which is what a pair stage trains on (embed_jax/data/wordnet_pairs.py):
  3,000 texts hold 491 pairs outside the validation split, the same share of each source.
"""
from __future__ import annotations

import bz2
import dataclasses
import functools
import hashlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Callable, Iterator

from embed_jax.data import debian_texts
from embed_jax.data.record_index import fold  # noqa: F401  (corpora.fold: the hold-out checks' text form)
from embed_jax.data.records import Text

WORDNET_DIR = Path(os.environ.get("EMBED_JAX_WORDNET_DIR", "/usr/share/wordnet"))
WORDNET_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}
HOLDOUT_PER_MILLE = 100
# Of the synsets not held out, those in the validation split: the hold-out's share, so the task is about as large.
VALIDATION_PER_MILLE = 100
WIKI_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# ~96 words ≈ 128 word pieces of the BERT vocabulary on this dump (1.3 pieces per word, measured with the MiniLM
# tokenizer), so a passage fits a 128-token student window and the teachers' windows (256 and 384) whole.
PASSAGE_MAX_WORDS = 96
# Shorter "paragraphs" are captions and headings that filter_wiki leaves behind.
PASSAGE_MIN_WORDS = 8
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_LIST_OR_TABLE = ("*", "#", ":", ";", "|", "!", "{", "=")
_QUOTED = re.compile(r'"([^"]*)"')


class CorpusMissingError(FileNotFoundError):
    """A built-in corpus's source files are not installed; the message says what to install."""


@dataclasses.dataclass(frozen=True)
class Synset:
    key: str  # part of speech (n, v, a, r) + 8-digit offset in that data file
    lemmas: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]


# ------------------------------------------------------------------------------------------------------ WordNet


def _synset_per_mille(salt: str, key: str) -> int:
    digest = hashlib.sha256(f"{salt}:{key}".encode("ascii")).hexdigest()
    return int(digest[:8], 16) % 1000


def is_held_out_synset(key: str) -> bool:
    return _synset_per_mille("wordnet-3.0", key) < HOLDOUT_PER_MILLE


def is_validation_synset(key: str) -> bool:
    """A training-side synset of the validation split (module docstring); never a held-out one."""
    return not is_held_out_synset(key) and _synset_per_mille("wordnet-3.0-validation", key) < VALIDATION_PER_MILLE


def parse_wordnet_line(line: str, pos: str) -> Synset:
    """One data-file line: `offset lex_filenum ss_type w_cnt word lex_id ... | gloss` (wndb(5WN))."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    word_count = int(fields[3], 16)
    lemmas = tuple(fields[4 + 2 * index].replace("_", " ") for index in range(word_count))
    gloss = gloss.strip()
    first_quote = gloss.find('"')
    definition = (gloss if first_quote < 0 else gloss[:first_quote]).strip().rstrip(";").strip()
    examples = tuple(example.strip() for example in _QUOTED.findall(gloss) if example.strip())
    return Synset(key=f"{pos}{int(fields[0]):08d}", lemmas=lemmas, definition=definition, examples=examples)


@functools.lru_cache(maxsize=2)
def read_wordnet(wordnet_dir: Path = WORDNET_DIR) -> tuple[Synset, ...]:
    """All 117,659 synsets of WordNet 3.0, in file order (noun, verb, adj, adv)."""
    synsets = []
    for pos, file_name in WORDNET_FILES.items():
        path = Path(wordnet_dir) / file_name
        if not path.is_file():
            raise CorpusMissingError(f"{path} not found: the WordNet corpus comes from Debian's wordnet-base. "
                                     f"Install it with `apt-get install -y wordnet-base` (scripts/setup.sh does).")
        with path.open(encoding="utf-8") as lines:
            # Lines that start with two spaces are the licence header (wndb(5WN)).
            synsets.extend(parse_wordnet_line(line, pos) for line in lines if not line.startswith("  "))
    return tuple(synsets)


def wordnet_holdout(wordnet_dir: Path = WORDNET_DIR) -> tuple[Synset, ...]:
    """The held-out synsets (definitions and examples) for evaluation, in file order."""
    return tuple(synset for synset in read_wordnet(wordnet_dir) if is_held_out_synset(synset.key))


def wordnet_validation(wordnet_dir: Path = WORDNET_DIR) -> tuple[Synset, ...]:
    """The validation split's synsets in file order, without any text equal (folded) to a held-out one: a synset
    whose definition repeats a held-out gloss is left out, and so is an example that repeats a held-out text."""
    held_out = holdout_folded_texts()
    return tuple(dataclasses.replace(synset, examples=tuple(example for example in synset.examples
                                                             if fold(example) not in held_out))
                 for synset in read_wordnet(wordnet_dir)
                 if is_validation_synset(synset.key) and fold(synset.definition) not in held_out)


def wordnet_texts(wordnet_dir: Path = WORDNET_DIR) -> Iterator[Text]:
    """Definitions and examples of the synsets that are not held out."""
    for synset in read_wordnet(wordnet_dir):
        if is_held_out_synset(synset.key):
            continue
        yield Text(f"wordnet:{synset.key}:definition", synset.definition)
        for index, example in enumerate(synset.examples):
            yield Text(f"wordnet:{synset.key}:example:{index}", example)


# ---------------------------------------------------------------------------------------------------------- Lee


def gensim_file(name: str) -> Path:
    """A file of gensim's bundled test data, found without importing gensim.test.utils (which builds test models
    and logs on import)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusMissingError(f"the built-in corpus file {name} ships with gensim; install it with "
                                 f"`pip install gensim==4.4.0`.")
    path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / name
    if not path.is_file():
        raise CorpusMissingError(f"{path} not found: this gensim install lacks its test data; reinstall "
                                 f"`pip install --force-reinstall gensim==4.4.0`.")
    return path


def lee_holdout() -> tuple[Text, ...]:
    """The 50 Lee et al. (2005) documents scored by humans; evaluation only. Ids `lee:<line number>`."""
    # lee.cor is Latin-1 (it carries a few non-ASCII bytes that are not UTF-8).
    lines = gensim_file("lee.cor").read_text(encoding="latin-1").splitlines()
    return tuple(Text(f"lee:{number}", line.strip()) for number, line in enumerate(lines) if line.strip())


def lee_background_texts() -> Iterator[Text]:
    lines = gensim_file("lee_background.cor").read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        yield Text(f"lee_background:{number}", line.strip())


# --------------------------------------------------------------------------------------------------- Wikipedia


def clean_wiki_markup(text: str) -> str:
    """Bold/italic quote runs that gensim's filter_wiki leaves in place."""
    return re.sub(r"'{2,}", "", text)


def split_passages(paragraph: str, max_words: int = PASSAGE_MAX_WORDS) -> list[str]:
    """Sentences packed greedily into passages of at most `max_words` words (a longer sentence stands alone)."""
    passages, current = [], []
    for sentence in _SENTENCE_END.split(paragraph):
        words = sentence.split()
        if current and len(current) + len(words) > max_words:
            passages.append(" ".join(current))
            current = []
        current.extend(words)
    if current:
        passages.append(" ".join(current))
    return passages


def wiki_article_passages(article_text: str) -> list[str]:
    from gensim.corpora.wikicorpus import filter_wiki

    passages = []
    for line in clean_wiki_markup(filter_wiki(article_text)).splitlines():
        line = line.strip()
        if not line or line.startswith(_LIST_OR_TABLE) or len(line.split()) < PASSAGE_MIN_WORDS:
            continue
        passages.extend(passage for passage in split_passages(line)
                        if len(passage.split()) >= PASSAGE_MIN_WORDS)
    return passages


def wiki_texts() -> Iterator[Text]:
    from gensim.corpora.wikicorpus import extract_pages

    # filter_namespaces=("0",) keeps articles; redirects are articles whose whole text is "#REDIRECT ...".
    with bz2.open(gensim_file(WIKI_DUMP)) as dump:
        for _title, article, page_id in extract_pages(dump, filter_namespaces=("0",)):
            if article.lstrip().upper().startswith("#REDIRECT"):
                continue
            for number, passage in enumerate(wiki_article_passages(article)):
                yield Text(f"wiki:{page_id}:{number}", passage)


# ------------------------------------------------------------------------------------------------ the registry


BUILTIN_CORPORA: dict[str, tuple[Callable[[], Iterator[Text]], ...]] = {
    "wiki": (wiki_texts,),
    "lee_background": (lee_background_texts,),
    "wordnet": (wordnet_texts,),
    "all": (wiki_texts, lee_background_texts, wordnet_texts),
    "bible": (debian_texts.bible_texts,),
    "fortunes": (debian_texts.fortune_texts,),
}


def corpus_readers(name: str) -> tuple[Callable[[], Iterator[Text]], ...]:
    """The readers of built-in corpus `name`: one registry name, or several joined with '+' (each reader once)."""
    readers = []
    for part in name.split("+"):
        if part not in BUILTIN_CORPORA:
            raise KeyError(f"{part!r} is unknown; choose one of {', '.join(BUILTIN_CORPORA)}, or join several with "
                           "'+' (e.g. all+bible+fortunes).")
        readers.extend(reader for reader in BUILTIN_CORPORA[part] if reader not in readers)
    return tuple(readers)


@functools.lru_cache(maxsize=1)
def holdout_folded_texts() -> frozenset[str]:
    """Every held-out text (Lee documents, held-out definitions and examples), folded (see `fold`)."""
    texts = [text for _, text in lee_holdout()]
    for synset in wordnet_holdout():
        texts.append(synset.definition)
        texts.extend(synset.examples)
    return frozenset(fold(text) for text in texts)


def is_held_out_record_id(record_id: str) -> bool:
    """True for ids of evaluation material (so eval can refuse records that contain it)."""
    if record_id.startswith("lee:"):
        return True
    parts = record_id.split(":")
    if len(parts) >= 2 and parts[0] == "wordnet":
        return is_held_out_synset(parts[1])
    return debian_texts.is_held_out_record_id(record_id)


ORDERS = ("text", "synset")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _text_order_key(item: Text) -> str:
    return _sha256(item.id)


def _synset_order_key(item: Text) -> tuple[str, str]:
    parts = item.id.split(":")
    group = f"wordnet:{parts[1]}" if parts[0] == "wordnet" and len(parts) >= 3 else item.id
    return _sha256(group), item.id


@functools.lru_cache(maxsize=4)
def _builtin_texts_ordered(name: str, order: str) -> tuple[Text, ...]:
    held_out = holdout_folded_texts()
    texts = [item for reader in corpus_readers(name) for item in reader() if fold(item.text) not in held_out]
    return tuple(sorted(texts, key=_synset_order_key if order == "synset" else _text_order_key))


def builtin_texts(name: str, max_texts: int | None = None, order: str = "text") -> tuple[Text, ...]:
    """The training texts of built-in corpus `name` in fixed order `order` (ORDERS); the first `max_texts` if given."""
    corpus_readers(name)  # an unknown name fails here, before any text is read
    if order not in ORDERS:
        raise KeyError(f"order {order!r}; choose one of {', '.join(ORDERS)}")
    texts = _builtin_texts_ordered(name, order)
    return texts if max_texts is None else texts[:max_texts]
