"""`--evaluate` (with `--sweep`) and `--export`: the command-line side of quality and export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from sst_desktop.cli_args import positive_int
from sst_desktop.console import fit_to_terminal, terminal_bar
from sst_desktop.data.project import Project
from sst_desktop.export import export_project
from sst_desktop.run.evaluate import evaluate, write_csvs
from sst_desktop.run.sweep import DEFAULT_SEEDS, label_efficiency_sweep

EXPORT_FORMATS = ("coco", "yolo", "csv", "segfolder")
DEFAULT_SHORTEST_SIDE = 1024


def add_modes(mode: argparse._MutuallyExclusiveGroup) -> None:
    """The `--evaluate SPEC` and `--export SPEC` modes."""
    mode.add_argument(
        "--evaluate",
        metavar="SPEC",
        help="compare the project's masks with ground-truth masks (--gt DIR): IoU and Dice per "
        "part, mIoU, per group and per image; CSVs are saved under the project's runs/",
    )
    mode.add_argument(
        "--export",
        metavar="SPEC",
        help="export the project's masks for training tools: --format coco|yolo|csv|segfolder "
        "--out PATH",
    )


def add_options(parser: argparse.ArgumentParser) -> None:
    """Options of the two modes (`--out` is shared with --view and defined there)."""
    group = parser.add_argument_group("--evaluate options")
    group.add_argument(
        "--gt",
        metavar="DIR",
        help="folder of ground-truth ID masks named like the project's masks ({pk}.png); "
        "default: the project's ground_truth setting",
    )
    group.add_argument(
        "--masks",
        choices=("pred", "ref", "all"),
        help="which masks: --evaluate pred (default) or ref; --export pred, ref or all "
        "(default all: a reference where there is one, else the prediction)",
    )
    group.add_argument(
        "--sweep",
        nargs="+",
        type=positive_int,
        metavar="K",
        help="label-efficiency sweep: for each K, draw K ground-truth frames per group as "
        "references, predict the other ground-truth frames in memory (nothing is written) and "
        "report mIoU as mean ± std over seeds",
    )
    group.add_argument(
        "--seeds",
        type=positive_int,
        metavar="S",
        help="with --sweep: number of seeds (0 .. S-1; default 3)",
    )
    export = parser.add_argument_group("--export options")
    export.add_argument(
        "--format", choices=EXPORT_FORMATS, help="export format (with --export and --out)"
    )
    export.add_argument(
        "--shortest-side",
        type=positive_int,
        metavar="N",
        help=f"with --format segfolder: resize so the shortest side is N (default "
        f"{DEFAULT_SHORTEST_SIDE})",
    )


def check_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject options given without their mode (argparse exits with code 2)."""
    if not args.evaluate:
        for dest, flag in (("gt", "--gt"), ("sweep", "--sweep"), ("seeds", "--seeds")):
            if getattr(args, dest):
                parser.error(f"{flag} needs --evaluate SPEC")
    if args.seeds and not args.sweep:
        parser.error("--seeds needs --sweep K ...")
    if args.masks and not (args.evaluate or args.export):
        parser.error("--masks needs --evaluate SPEC or --export SPEC")
    if args.evaluate and args.masks == "all":
        parser.error("--evaluate compares one kind of mask: use --masks pred or --masks ref")
    if args.sweep and args.masks:
        parser.error("--sweep makes its own predictions: drop --masks")
    if not args.export and (args.format or args.shortest_side):
        parser.error("--format/--shortest-side need --export SPEC")
    if args.export and not (args.format and args.out):
        parser.error("--export needs --format coco|yolo|csv|segfolder and --out PATH")
    if args.shortest_side and args.format != "segfolder":
        parser.error("--shortest-side only applies to --format segfolder")


def run_evaluate(args: argparse.Namespace) -> int:
    """`--evaluate SPEC --gt DIR [--masks pred|ref] [--sweep K ... [--seeds S]]`."""
    project = Project.open(args.evaluate)
    groups = getattr(args, "groups", None)
    if args.sweep:
        bar = _bar("sweep", quiet=getattr(args, "quiet", False))
        result = label_efficiency_sweep(
            project,
            ks=args.sweep,
            seeds=args.seeds or DEFAULT_SEEDS,
            gt_dir=args.gt,
            groups=groups,
            device=getattr(args, "device", None),
            on_progress=bar,
        )
        bar.close()
        for line in result.lines():
            print(line)
        return 0
    result = evaluate(project, gt_dir=args.gt, masks=args.masks or "pred", groups=groups)
    try:
        write_csvs(result, Path(project.root) / "runs")
    except OSError as exc:
        print(f"warning: could not save the CSVs: {exc.strerror or exc}", file=sys.stderr)
    for line in result.table_lines():
        print(line)
    for path in result.files:
        print(f"saved {path}", file=sys.stderr)
    return 1 if result.errors else 0


def run_export(args: argparse.Namespace) -> int:
    """`--export SPEC --format F --out PATH [--masks pred|ref|all] [--shortest-side N]`."""
    project = Project.open(args.export)
    bar = _bar(f"export {args.format}", quiet=getattr(args, "quiet", False))
    result = export_project(
        project,
        fmt=args.format,
        out=args.out,
        masks=args.masks or "all",
        shortest_side=args.shortest_side or DEFAULT_SHORTEST_SIDE,
        on_progress=bar,
    )
    bar.close()
    for line in result.lines():
        print(line)
    return 1 if result.errors else 0


class _bar:
    """A tqdm progress bar on stderr driven by (done, total) callbacks."""

    def __init__(self, desc: str, quiet: bool = False) -> None:
        self.desc, self.quiet = desc, quiet
        self.tqdm: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.tqdm is None:
            self.tqdm = terminal_bar(sys.stderr, total=total, desc=self.desc, unit="img")
        fit_to_terminal(self.tqdm, sys.stderr)
        self.tqdm.total = total
        self.tqdm.n = done
        self.tqdm.refresh()

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
