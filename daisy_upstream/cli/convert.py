"""``daisy convert SRC --out DST``: any checkpoint source -> s3prl's converted format, for the
stock ``<family>_local`` upstreams (and daisy_upstream's), with the source and its SHA-256."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src",
        type=Path,
        help="a fairseq original (.pt), a transformers folder, unilm's WavLM file or s3prl's converted file",
    )
    parser.add_argument("--out", type=Path, required=True, help="the converted file to write")
    parser.add_argument("--force", action="store_true", help="replace an --out that a previous convert wrote")


def run(args: argparse.Namespace) -> int:
    from daisy_upstream.atomic import atomic_torch_save
    from daisy_upstream.core.checkpoint_checks import check_structure
    from daisy_upstream.core.families import family_of_state
    from daisy_upstream.core.sources import read_source, source_format, stock_checkpoint
    from daisy_upstream.outputs import check_output_files, output_files

    check_output_files([args.out], "convert", args.force, (args.src,))  # before any work
    state = read_source(args.src)
    family = family_of_state(state, str(args.src))
    check_structure(state, family.weights(state), str(args.src))  # config against weights, before writing
    converted = stock_checkpoint(state, args.src)
    with output_files([args.out], "convert", args.force, inputs=(args.src,)) as (tmp,):
        atomic_torch_save(converted, tmp)
    filled = converted["source"]["filled"]
    print(f"read {args.src}: {source_format(state)} {family.name} ({converted['source'].get('class', family.name)})")
    if filled:
        print(f"not in the source, written as zeros for the stock loader (unused by it): {', '.join(filled)}")
    print(
        f"wrote {args.out}: s3prl's converted format; -u {family.stock_upstream} or -u {family.upstream} -k {args.out}"
    )
    return 0
