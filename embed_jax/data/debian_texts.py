"""English prose that Debian's package archive ships: the King James Bible and the fortune-cookie files.

* `bible`: the King James Bible (Debian's `bible-kjv` + `bible-kjv-text`, read with its `bible` program: 31,102
  verses). Consecutive verses of one chapter are packed into passages of at most PASSAGE_MAX_WORDS words, so the
  texts are paragraph-length (a verse alone is one sentence, which WordNet already gives in abundance). Id
  `bible:<book> <chapter>:<first verse>`, e.g. `bible:Ge 1:1`.
* `fortunes`: Debian's `fortunes` files (quotations, jokes, definitions, short poems): every `%`-separated entry
  whose characters are mostly letters (ASCII art is left out), whitespace folded, attribution kept. Id
  `fortunes:<file>:<entry number>`.

Hold-out: a tenth of each source is kept out of training for evaluation, chosen by a hash of what a reader would
call one unit — the chapter for the Bible (a verse's neighbours would otherwise leak it), the entry for fortunes —
with the same rule as WordNet's synsets (sha256 of a fixed prefix + the key, first 8 hex digits, modulo 1000, below
HOLDOUT_PER_MILLE). The rule depends on nothing but the key, so it is the same on every machine and corpus size.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

from embed_jax.data.records import Text

HOLDOUT_PER_MILLE = 100
# The same packing bound as the Wikipedia passages (embed_jax/data/corpora.py): ~128 word pieces, one student window.
PASSAGE_MAX_WORDS = 96
FORTUNES_DIR = Path(os.environ.get("EMBED_JAX_FORTUNES_DIR", "/usr/share/games/fortunes"))
BIBLE_PROGRAM = os.environ.get("EMBED_JAX_BIBLE_PROGRAM", "bible")
BIBLE_RANGE = "Gen1:1-Rev22:21"
# Share of letters among an entry's non-space characters below which it is drawing, not text (ASCII-art entries
# sit below 0.5; prose and verse above 0.75 on these files).
MIN_LETTER_SHARE = 0.6
_VERSE_LINE = re.compile(r"^(?P<book>\S+?)(?P<chapter>\d+):(?P<verse>\d+) (?P<text>.*)$")


class DebianTextMissingError(FileNotFoundError):
    """A Debian text package is not installed; the message names the package and the install command."""


def is_held_out(source: str, key: str) -> bool:
    digest = hashlib.sha256(f"{source}:{key}".encode("utf-8")).hexdigest()
    return int(digest[:8], 16) % 1000 < HOLDOUT_PER_MILLE


# --------------------------------------------------------------------------------------------------------- Bible


def read_bible_verses() -> tuple[tuple[str, int, int, str], ...]:
    """(book, chapter, verse, text) of every verse, in canonical order."""
    return _read_bible_verses(BIBLE_PROGRAM)


@functools.lru_cache(maxsize=1)
def _read_bible_verses(program: str) -> tuple[tuple[str, int, int, str], ...]:
    if shutil.which(program) is None:
        raise DebianTextMissingError(
            f"the `bible` corpus needs Debian's King James Bible: `{program}` was not found. Install it with "
            "`apt-get install -y bible-kjv bible-kjv-text` (scripts/setup.sh does).")
    result = subprocess.run([program, "-f", BIBLE_RANGE], capture_output=True, text=True, check=False,
                            env={**os.environ, "COLUMNS": "100000"})
    verses = []
    for line in result.stdout.splitlines():
        match = _VERSE_LINE.match(line.strip())
        if match:
            verses.append((match["book"], int(match["chapter"]), int(match["verse"]), match["text"].strip()))
    if result.returncode != 0 or not verses:
        raise DebianTextMissingError(
            f"`{program} -f {BIBLE_RANGE}` gave no verses (exit {result.returncode}: {result.stderr.strip()[:200]}). "
            "Reinstall Debian's text with `apt-get install --reinstall -y bible-kjv bible-kjv-text`.")
    return tuple(verses)


def pack_verses(verses: list[tuple[int, str]], max_words: int = PASSAGE_MAX_WORDS) -> list[tuple[int, str]]:
    """(first verse number, passage) of consecutive verses packed greedily to at most `max_words` words (a longer
    verse stands alone)."""
    passages, first, words = [], None, []
    for number, text in verses:
        verse_words = text.split()
        if words and len(words) + len(verse_words) > max_words:
            passages.append((first, " ".join(words)))
            words = []
        if not words:
            first = number
        words.extend(verse_words)
    if words:
        passages.append((first, " ".join(words)))
    return passages


def bible_chapters(held_out: bool) -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """('<book> <chapter>', [(verse, text), ...]) of the training chapters (or the held-out ones)."""
    chapter_key, chapter = None, []
    for book, chapter_number, verse, text in read_bible_verses():
        key = f"{book} {chapter_number}"
        if key != chapter_key and chapter:
            if is_held_out("bible-kjv", chapter_key) == held_out:
                yield chapter_key, chapter
            chapter = []
        chapter_key = key
        chapter.append((verse, text))
    if chapter and is_held_out("bible-kjv", chapter_key) == held_out:
        yield chapter_key, chapter


def bible_passages(held_out: bool = False) -> Iterator[Text]:
    for key, verses in bible_chapters(held_out):
        for first, passage in pack_verses(verses):
            yield Text(f"bible:{key}:{first}", passage)


def bible_texts() -> Iterator[Text]:
    """The training passages (chapters not held out)."""
    return bible_passages(held_out=False)


# ------------------------------------------------------------------------------------------------------ fortunes


def fortune_files(folder: Path | None = None) -> list[Path]:
    """The plain-text fortune files (not their .dat indexes or .u8 links), by name."""
    folder = FORTUNES_DIR if folder is None else folder
    if not folder.is_dir():
        raise DebianTextMissingError(f"the `fortunes` corpus needs Debian's fortune files: {folder} not found. "
                                     "Install them with `apt-get install -y fortunes` (scripts/setup.sh does).")
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and not path.is_symlink() and path.suffix not in (".dat", ".u8"))


def is_prose(entry: str) -> bool:
    characters = [character for character in entry if not character.isspace()]
    return bool(characters) and sum(character.isalpha() for character in characters) / len(characters) >= MIN_LETTER_SHARE


def fortune_entries(path: Path) -> Iterator[tuple[int, str]]:
    """(entry number, whitespace-folded text) of each `%`-separated entry of one fortune file."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, entry in enumerate(re.split(r"^%\s*$", text, flags=re.MULTILINE)):
        if is_prose(entry):
            yield number, " ".join(entry.split())


def fortune_texts(held_out: bool = False, folder: Path | None = None) -> Iterator[Text]:
    for path in fortune_files(folder):
        for number, entry in fortune_entries(path):
            key = f"{path.name}:{number}"
            if is_held_out("fortunes", key) == held_out:
                yield Text(f"fortunes:{key}", entry)


def is_held_out_record_id(record_id: str) -> bool:
    """True for the ids of this module's held-out units (so evaluation can refuse records that contain them)."""
    source, _, rest = record_id.partition(":")
    if source == "bible":
        chapter = rest.rpartition(":")[0]
        return bool(chapter) and is_held_out("bible-kjv", chapter)
    if source == "fortunes":
        return is_held_out("fortunes", rest)
    return False
