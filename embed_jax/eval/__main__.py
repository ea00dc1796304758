r"""python -m embed_jax.eval --model=SPEC [--model=SPEC ...] --out=DIR

Scores each model, and each of its heads, on the hold-out that training never sees (docs/eval.md), and writes
DIR/results.json and DIR/results.md (one row per model × head). For example, both teachers, the concatenated teacher
and a trained workdir:

    python -m embed_jax.eval --out=runs/eval \
        --model=asset:all-MiniLM-L6-v2 --model=asset:all-mpnet-base-v2 \
        --model=concat:asset:all-MiniLM-L6-v2+asset:all-mpnet-base-v2 --model=runs/default/train

Specs: embed_jax/eval/specs.py. Encoded vectors are cached in DIR/cache (--no_cache to skip).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embed_jax.eval import encoding, overlap, report, tasks


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m embed_jax.eval", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="SPEC",
                        help="a model to score (repeat for several); see embed_jax/eval/specs.py")
    parser.add_argument("--out", required=True, type=Path, help="folder for results.json, results.md and cache/")
    parser.add_argument("--tasks", default=",".join(tasks.DEFAULT_TASKS),
                        help=f"comma-separated tasks (default: all of {', '.join(tasks.DEFAULT_TASKS)})")
    parser.add_argument("--max_length", type=int, default=0,
                        help="token window for every model (default 0: each model's own)")
    parser.add_argument("--pca_fit_texts", type=int, default=encoding.EncodeContext.pca_fit_texts,
                        help="built-in training texts that pca:SPEC@DIM is fitted on")
    parser.add_argument("--allow_overlap", action="store_true",
                        help="score models whose training records overlap the hold-out (their rows are marked)")
    parser.add_argument("--no_cache", action="store_true", help="do not read or write DIR/cache")
    parser.add_argument("--progress_every_s", type=float, default=10.0, help="seconds between progress lines")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.max_length < 0 or args.pca_fit_texts <= 0:
        print("error: --max_length must be ≥ 0 and --pca_fit_texts > 0", file=sys.stderr)
        return 2
    context = encoding.EncodeContext(cache_dir=None if args.no_cache else args.out / "cache",
                                     progress_every_s=args.progress_every_s, max_length=args.max_length,
                                     pca_fit_texts=args.pca_fit_texts, allow_overlap=args.allow_overlap)
    from embed_jax.eval import runner

    try:
        report.check_output_folder(args.out)
        results = runner.evaluate(args.model, [name.strip() for name in args.tasks.split(",") if name.strip()],
                                  context)
    except (encoding.ModelSpecError, tasks.UnknownTaskError, overlap.HoldoutOverlapError,
            overlap.TrainingRecordsError, report.OutputFolderError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results["command"] = ["python", "-m", "embed_jax.eval", *(sys.argv[1:] if argv is None else argv)]
    json_path, markdown_path = report.write_report(results, args.out)
    print(report.markdown(results))
    print(f"[eval] wrote {json_path} and {markdown_path}", file=sys.stderr)
    unchecked = {row["model"]: row["holdout"]["note"] for row in results["rows"]
                 if row["holdout"]["status"] == overlap.UNCHECKED}
    for model, note in unchecked.items():
        print(f"[eval] warning: {model}: hold-out overlap unchecked ({note})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
