"""Lines on the console of a run that every process runs: process 0 speaks for all of them."""
from __future__ import annotations

import jax



def log(message: str) -> None:
    """A line on process 0's console: every process runs the same code, one of them speaks."""
    if jax.process_index() == 0:
        print(message)
