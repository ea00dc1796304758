"""The argument after a config file's colon (`--config=configs/shrink.py:minilm,smoke`), read one way for every config.

    words = parse_arg(arg, config_file="configs/shrink.py", words=("mpnet", "minilm", "smoke"),
                      one_of=[("mpnet", "minilm")])          # 'minilm,smoke' → {'minilm', 'smoke'}

The argument is a comma-separated set of words the config declares (big_vision's configs take `name=value` pairs
through their `parse_arg`; every variant here is a plain word). An unknown word, or two words of a group that exclude
each other, is refused in one line naming the config file, the argument and the words it accepts: a mistyped
`:smok` would otherwise run the full config.
"""
from __future__ import annotations

from collections.abc import Sequence


def parse_arg(arg: str | None, *, config_file: str, words: Sequence[str],
              one_of: Sequence[Sequence[str]] = ()) -> frozenset[str]:
    """The words of `arg` ('' or None: none); a ValueError for an unknown word or two words of one `one_of` group."""
    given = [word.strip() for word in (arg or "").split(",") if word.strip()]
    unknown = [word for word in given if word not in words]
    if unknown:
        accepted = f"a comma-separated subset of {list(words)}" if words else "no argument (this config has none)"
        raise ValueError(f"{config_file}:{arg}: unknown word(s) {unknown}; use {accepted}, e.g. "
                         f"--config={config_file}" + (f":{words[-1]}" if words else ""))
    for group in one_of:
        chosen = sorted({word for word in given if word in group})
        if len(chosen) > 1:
            raise ValueError(f"{config_file}:{arg}: names {len(chosen)} of {list(group)} ({chosen}); choose one")
    return frozenset(given)
