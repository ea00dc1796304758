"""python -m embed_jax.plan --config=configs/jasper.py --topology=v5p-32 [--mesh=auto] [--out=DIR]

Compiles every stage of the config's stage_order (every length bucket) for a TPU slice it does not run on, from the
student's shape alone (model.init_from's config.json, or a shipped shape: embed_jax/models/shapes/), and prints per
stage: HBM per chip by kind against the chip's (fits, or over by how much and which knob), compiled FLOPs against
the analytic count, the compiler's step-time estimate and the MFU it implies (estimates, labelled so), collectives,
and the stage's steps and hours. Writes plan_<config>_<topology>.json and .md under --out. --compute_floor adds each
text stage's compute floor: its step on one chip with no collectives, and the MFU ceiling that implies.

Needs libtpu (the `plan` extra: pip install -e '.[plan]'). JAX stays on the CPU backend.
Exit status: 0 planned (fitting or not), 2 bad input.
"""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags
import ml_collections
from ml_collections import config_flags

import embed_jax.plan  # noqa: F401  (JAX on the CPU backend before jax is imported)
from embed_jax import cli
from embed_jax.train import sharding

FLAGS = cli.program_flags()
flags.DEFINE_string("config", None, "Training config file (a get_config() module, FILE[:ARG]); override any key with "
                    "--config.KEY=VALUE.", flag_values=FLAGS)
flags.DEFINE_string("topology", None, "TPU slice: gcloud's accelerator type (v5p-32, v5litepod-16 or v5e-16, v4-32, "
                    "v6e-16) or JAX's topology (v5p:2x2x4).", flag_values=FLAGS)
flags.DEFINE_string("mesh", "config", "config: the config's mesh; auto: the least FSDP whose every stage fits "
                    "(compiled); or data=D,fsdp=F[,tensor=T].", flag_values=FLAGS)
flags.DEFINE_string("shape", "", "The encoder's config.json (a path) or a shipped shape name, when model.init_from "
                    "has none.", flag_values=FLAGS)
flags.DEFINE_integer("texts", None, "Texts in the training data (default: data.records_dir's manifest, else "
                     "8,000,000).", flag_values=FLAGS)
flags.DEFINE_list("stages", [], "Plan only these stages of stage_order.", flag_values=FLAGS)
flags.DEFINE_list("lengths", [], "Compile only these length buckets (default: every bucket).", flag_values=FLAGS)
flags.DEFINE_bool("pin_activations", True, "Pin activations to the batch sharding (off: XLA's propagation decides, "
                  "the layout before the fix).", flag_values=FLAGS)
flags.DEFINE_bool("windowed_einsum", True, "Let XLA loop sharded matmuls as windowed einsums (the compiler's default); "
                  "--nowindowed_einsum keeps them whole so that the cost model prices every matmul.",
                  flag_values=FLAGS)
flags.DEFINE_enum("remat", "config", ["config", "none", "full", "dots"],
                  "Override model.text_options.remat to compare: none (store every activation), full (recompute each "
                  "layer from its input), dots (store the matmul outputs; models/layers.py REMAT_POLICIES).",
                  flag_values=FLAGS)
flags.DEFINE_list("layers_from", [], "A,B: compile A- and B-layer students and extrapolate every figure linearly to "
                  "the full depth (minutes instead of an hour for deep students on a slow CPU; labelled so).",
                  flag_values=FLAGS)
flags.DEFINE_bool("compute_floor", False, "Also compile each text stage on one chip at two small batches: the step's "
                  "compute with no collectives, and the MFU ceiling it implies (two more compiles per stage; "
                  "embed_jax/plan/compute_floor.py).", flag_values=FLAGS)
flags.DEFINE_string("out", "plans", "Folder for the JSON and Markdown.", flag_values=FLAGS)

DEFAULT_TEXTS = 8_000_000
LIBTPU_HINT = ("libtpu is not installed: the plan compiles for TPUs with it. Install the plan extra: "
               "pip install -e '.[plan]' (libtpu==0.0.42.*)")


def check_libtpu() -> None:
    if importlib.util.find_spec("libtpu") is None:
        raise cli.UsageError(LIBTPU_HINT)


def parse_mesh(value: str) -> dict[str, int] | str:
    if value in ("config", "auto"):
        return value
    try:
        return sharding.parse_mesh_sizes(value, key="--mesh")
    except ValueError as error:
        raise cli.UsageError(f"{error}; or --mesh=config, --mesh=auto") from None


def training_texts(config, texts: int | None) -> int:
    """--texts, else the records' count (data.records_dir's manifest), else DEFAULT_TEXTS."""
    if texts is not None:
        if texts < 1:
            raise cli.UsageError(f"--texts={texts}: give the number of training texts (≥ 1)")
        return texts
    folder = str(config.data.get("records_dir", "") or "")
    if folder:
        from embed_jax.data import records

        try:
            return sum(int(records.read_manifest(part.strip()).num_records or 0)
                       for part in folder.split(",") if part.strip()) or DEFAULT_TEXTS
        except records.RecordsError:
            return DEFAULT_TEXTS
    return DEFAULT_TEXTS


def load_config(argv: Sequence[str]):
    """The --config file with its --config.KEY=VALUE overrides, read by ml_collections' own flag (on flags of its
    own for each call: it defines the override flags from the arguments it is given)."""
    config_flag_values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, "Training config file.", flag_values=config_flag_values,
                                             lock_config=True, sys_argv=["plan", *argv])
    try:
        config_flag_values(["plan", *argv])
    except (flags.Error, AttributeError, KeyError) as error:
        raise cli.UsageError(f"--config: {error}") from None
    return holder.value


def main(argv: Sequence[str] | None = None) -> int:
    from embed_jax.plan import planner, programs, shape_source, topology as topologies

    argv = list(sys.argv[1:] if argv is None else argv)
    config_arguments = [argument for argument in argv if argument.startswith("--config")]
    try:
        cli.parse(FLAGS, [argument for argument in argv if not argument.startswith("--config.")], doc=__doc__)
        cli.require(FLAGS, ["config", "topology"])
        topology = topologies.parse_topology(FLAGS.topology)
        mesh_choice = parse_mesh(FLAGS.mesh)
        config = with_remat(load_config(config_arguments), FLAGS.remat)
        hf_config = shape_source.encoder_config(config, FLAGS.shape)
        texts = training_texts(config, FLAGS.texts)
        stage_names = [name for name in config.stage_order if not FLAGS.stages or name in FLAGS.stages]
        unknown = sorted(set(FLAGS.stages) - set(config.stage_order))
        if unknown:
            raise cli.UsageError(f"--stages: {unknown} are not in the config's stage_order {tuple(config.stage_order)}")
        lengths = [int(length) for length in FLAGS.lengths] or None
        check_libtpu()
        depths = parse_depths(FLAGS.layers_from)
        if depths is not None:
            planner.check_depths(config, hf_config, stage_names, depths)
        return run(config, topology, hf_config, mesh_choice, stage_names, texts=texts, lengths=lengths, depths=depths,
                   pin=FLAGS.pin_activations, out_dir=Path(FLAGS.out), config_name=config_label(argv))
    except (cli.UsageError, topologies.TopologyError, programs.PlanError, ValueError) as error:
        return cli.fail(error)


def with_remat(config, choice: str):
    """`config` with model.text_options.remat set as --remat names it (a new dict: the config's field is a bool)."""
    if choice == "config":
        return config
    options = dict(config.model.text_options)
    options["remat"] = {"none": False, "full": True}.get(choice, choice)
    config.model.text_options = ml_collections.ConfigDict(options)
    return config


def config_label(argv: Sequence[str] | None) -> str:
    """The config file's name (and argument) as given, for the output's title and file names: jasper, jasper_smoke."""
    path, _, arg = str(FLAGS.config).partition(":")
    return Path(path).stem + (f"_{arg}" if arg else "")


def parse_depths(values: Sequence[str]) -> tuple[int, int] | None:
    if not values:
        return None
    if len(values) != 2 or not all(value.strip().isdigit() for value in values):
        raise cli.UsageError(f"--layers_from={','.join(values)}: give two layer counts, e.g. --layers_from=4,6")
    return int(values[0]), int(values[1])


def run(config, topology, hf_config, mesh_choice, stage_names, *, texts, lengths, depths, pin, out_dir,
        config_name) -> int:
    from embed_jax.plan import compute_floor, planner, programs, report

    devices = topology_devices(topology)
    notes: list[str] = []
    if mesh_choice == "auto":
        sizes, notes = planner.choose_mesh(config, hf_config, topology, devices, texts=texts,
                                           log=lambda line: print(line, file=sys.stderr))
        config = planner.with_mesh(config, sizes)
        notes.append(f"chosen: --config.mesh.data={sizes['data']} --config.mesh.fsdp={sizes['fsdp']}")
    elif isinstance(mesh_choice, dict):
        config = planner.with_mesh(config, {"data": 1, "fsdp": 1, "tensor": 1, **mesh_choice})
    if mesh_choice != "config":
        # --mesh=auto or sizes: one mesh for every stage, to compare; --mesh=config keeps each stage's own `mesh`.
        config = planner.without_stage_meshes(config, stage_names)
    mesh = planner.check_mesh(config, devices)
    notes.append(f"data={mesh.shape['data']} fsdp={mesh.shape['fsdp']} tensor={mesh.shape['tensor']}"
                 + ("" if pin else "; activations NOT pinned (XLA's propagation)")
                 + f"; remat={config.model.text_options.get('remat', False)!r}"
                 + ("" if FLAGS.windowed_einsum else "; windowed einsum off"))
    # Every stage's mesh (its own `mesh`, else the config's) is checked before the first compile.
    stage_meshes = {name: programs.make_mesh(config, devices, name) for name in stage_names}
    plans = []
    for name in stage_names:
        options = dict(texts=texts, pin_activations=pin, lengths=lengths, windowed_einsum=FLAGS.windowed_einsum,
                       log=lambda line: print(line, file=sys.stderr))
        plan = (planner.plan_stage(config, name, hf_config, topology, stage_meshes[name], **options)
                if depths is None else
                planner.plan_stage_from_shallow(config, name, hf_config, topology, stage_meshes[name], depths,
                                                **options))
        if FLAGS.compute_floor:
            plan.floor = compute_floor.compute_floor(
                config, plan, hf_config, topology, devices, depths=depths, pin_activations=pin,
                windowed_einsum=FLAGS.windowed_einsum, log=options["log"])
        plans.append(plan)
    print(report.console(plans, topology, mesh_notes=notes))
    stem = f"plan_{config_name}_{topology.accelerator_type}" + ("" if pin else "_unpinned")
    document = report.plan_dict(plans, topology, config_name=config_name, mesh_notes=notes)
    markdown = report.markdown(plans, topology, config_name=config_name, mesh_notes=notes)
    for path in report.write(out_dir, stem, document, markdown):
        print(f"wrote {path}")
    return 0


def topology_devices(topology):
    """The slice's devices, from libtpu (v4: one device per chip, its two TensorCores as one: 'megacore')."""
    from jax.experimental import topologies

    options = {"chip_config_name": "megacore"} if topology.chip.generation == "v4" else {}
    return topologies.get_topology_desc(topology_name=topology.jax_name, platform="tpu", **options).devices


if __name__ == "__main__":
    sys.exit(main())
