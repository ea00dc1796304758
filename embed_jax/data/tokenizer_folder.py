"""Is there a real tokenizer in a model folder? The one check the teacher export and the student's pipeline share.

A Hugging Face folder without tokenizer files still loads: transformers 5 builds a tokenizer of the model's special
tokens alone ([PAD], [UNK], [CLS], [SEP], [MASK]), every word becomes [UNK], and the vectors then depend only on the
number of words (measured: a tiny BERT saved without its vocab.txt gives `len(tokenizer) == 5` and "hello world" →
[CLS] [UNK] [UNK] [SEP]). Saving that tokenizer writes a tokenizer.json of those 5 tokens, so a file's presence is
not enough either: a real tokenizer has words besides its special tokens.
"""
from __future__ import annotations

from pathlib import Path

# The files a Hugging Face tokenizer draws its vocabulary from (WordPiece, BPE, SentencePiece, or all in one).
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.model")


class TokenizerFolderError(ValueError):
    """A model folder holds no real tokenizer; the message names the folder, the files looked for and the key."""


def require_vocabulary_files(folder: Path, key: str, files: tuple[str, ...] = VOCABULARY_FILES) -> None:
    """Refuse `folder` (read for config key `key`) when it holds none of `files`."""
    if not any((folder / name).is_file() for name in files):
        raise TokenizerFolderError(
            f"{key}: {folder} has no tokenizer (looked for {', '.join(files)}); without one every word would become "
            f"the unknown token. Copy the tokenizer files of the model into that folder "
            f"(`AutoTokenizer.from_pretrained(model).save_pretrained(folder)`).")


def require_real_vocabulary(vocabulary_size: int, num_special_tokens: int, folder: Path, key: str) -> None:
    """Refuse a loaded tokenizer whose vocabulary is nothing but its special tokens (see the module docstring)."""
    if vocabulary_size <= num_special_tokens:
        raise TokenizerFolderError(
            f"{key}: the tokenizer in {folder} has {vocabulary_size} tokens, all of them special tokens: every word "
            f"would become the unknown token. The folder's tokenizer files were written without a vocabulary; copy "
            f"the model's real tokenizer files ({', '.join(VOCABULARY_FILES)}) into it.")
