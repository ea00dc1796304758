"""TPU slices by name: what `--topology` accepts, how many chips it has, and each chip's HBM and peak bf16 FLOP/s.

Two spellings name a slice:
- gcloud's accelerator type, `GENERATION-SIZE` (v5p-32, v5litepod-16 or v5e-16, v4-32, v6e-16). SIZE counts
  TensorCores for v4 and v5p (two per chip: v5p-32 is 16 chips) and chips for v5e and v6e;
- JAX's topology name, `GENERATION:AxBxC` (v5p:2x2x4, v5e:4x4, v4:2x2x4, v6e:4x4): the chip grid.

Chip figures are the Cloud TPU system-architecture pages' per-chip specifications (HBM capacity, peak bf16 dense
TFLOP/s). The compiler sees the topology through libtpu (`jax.experimental.topologies`), which compiles for slices
it is not running on; v4 chips are two TensorCores that JAX drives as one device ("megacore").
"""
from __future__ import annotations

import dataclasses
import math
import re

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    generation: str  # JAX's spelling: v4, v5e, v5p, v6e
    hbm_bytes: int
    peak_bf16_flops: float  # per chip, per second
    cores_per_chip_in_gcloud_size: int  # gcloud's SIZE counts TensorCores (v4, v5p: 2 per chip) or chips (v5e, v6e)
    grid_dims: int  # 3-D torus (v4, v5p) or 2-D (v5e, v6e)
    gcloud_prefix: str  # the accelerator type's prefix `gcloud compute tpus` takes


CHIPS = {
    "v4": Chip("v4", 32 * GIB, 275e12, 2, 3, "v4"),
    "v5e": Chip("v5e", 16 * GIB, 197e12, 1, 2, "v5litepod"),
    "v5p": Chip("v5p", 95 * GIB, 459e12, 2, 3, "v5p"),
    "v6e": Chip("v6e", 32 * GIB, 918e12, 1, 2, "v6e"),
}
# gcloud's generation names → JAX's.
GCLOUD_GENERATIONS = {"v4": "v4", "v5litepod": "v5e", "v5e": "v5e", "v5p": "v5p", "v6e": "v6e"}

# The chip grids of the slice sizes Cloud TPU offers (its "topologies" tables), by chip count.
GRIDS_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}
GRIDS_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8), 256: (4, 8, 8),
            512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16)}

GCLOUD_NAME = re.compile(r"^(?P<generation>v[0-9][a-z]*)-(?P<size>[0-9]+)$")
JAX_NAME = re.compile(r"^(?P<generation>v[0-9][a-z]*):(?P<grid>[0-9]+(?:x[0-9]+)+)$")


class TopologyError(ValueError):
    """A topology name the plan cannot compile for; the message lists the known ones."""


@dataclasses.dataclass(frozen=True)
class Topology:
    chip: Chip
    grid: tuple[int, ...]

    @property
    def num_chips(self) -> int:
        return math.prod(self.grid)

    @property
    def jax_name(self) -> str:
        return f"{self.chip.generation}:{'x'.join(map(str, self.grid))}"

    @property
    def accelerator_type(self) -> str:
        """gcloud's `--accelerator-type` for this slice."""
        return f"{self.chip.gcloud_prefix}-{self.num_chips * self.chip.cores_per_chip_in_gcloud_size}"

    @property
    def label(self) -> str:
        return f"{self.accelerator_type} ({self.jax_name}, {self.num_chips} chips)"


def known_topologies() -> list[str]:
    """Every gcloud name the plan knows (each also reachable by its JAX name)."""
    names = []
    for chip in CHIPS.values():
        grids = GRIDS_3D if chip.grid_dims == 3 else GRIDS_2D
        names += [f"{chip.gcloud_prefix}-{chips * chip.cores_per_chip_in_gcloud_size}" for chips in grids]
    return names


def _unknown(name: str, why: str) -> TopologyError:
    shown = ", ".join(known_topologies())
    return TopologyError(f"--topology={name!r}: {why}. Known: {shown}; or JAX's GENERATION:AxBxC (e.g. v5p:2x2x4, "
                         f"v5e:4x4), generations {', '.join(CHIPS)}")


def parse_topology(name: str) -> Topology:
    """A slice from its gcloud or JAX name; TopologyError (listing the known ones) for anything else."""
    name = str(name).strip()
    if match := JAX_NAME.match(name):
        generation = match["generation"]
        if generation not in CHIPS:
            raise _unknown(name, f"unknown TPU generation {generation!r}")
        grid = tuple(int(size) for size in match["grid"].split("x"))
        if len(grid) != CHIPS[generation].grid_dims or min(grid) < 1:
            raise _unknown(name, f"{generation} chips form a {CHIPS[generation].grid_dims}-D grid")
        return Topology(CHIPS[generation], grid)
    if match := GCLOUD_NAME.match(name):
        generation = GCLOUD_GENERATIONS.get(match["generation"])
        if generation is None:
            raise _unknown(name, f"unknown TPU generation {match['generation']!r}")
        chip = CHIPS[generation]
        size = int(match["size"])
        chips, remainder = divmod(size, chip.cores_per_chip_in_gcloud_size)
        grids = GRIDS_3D if chip.grid_dims == 3 else GRIDS_2D
        if remainder or chips not in grids:
            raise _unknown(name, f"no {match['generation']} slice of size {size}")
        return Topology(chip, grids[chips])
    raise _unknown(name, "not a TPU slice name")
