"""The `sst-desktop` command: open the app, serve it to a browser, run inference, view masks."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from urllib.parse import quote

from sst_desktop import __version__, cli_quality
from sst_desktop.app import preflight, window
from sst_desktop.app.access import policy
from sst_desktop.app.server import serve
from sst_desktop.app.terminal import check, keys_from_stdin
from sst_desktop.app.viewer import find_mask_context, render_overlays
from sst_desktop.cli_args import fraction, port, positive_int
from sst_desktop.data import registry
from sst_desktop.data.project import Project
from sst_desktop.engine.models import DEVICES
from sst_desktop.errors import UserError
from sst_desktop.run.cluster import run_on_cluster, timing_lines
from sst_desktop.run.pipeline import format_timings
from sst_desktop.run.progress import ProgressReporter
from sst_desktop.run.runner import RunOptions, dry_run, run_inference
from sst_desktop.run.shards import options_for, parse_shard, plan_shards, shard_plan_lines

PROG = "sst-desktop"

# Exit codes (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # some frames failed, or the dry run found problems
EXIT_USAGE = 2  # bad arguments, spec or other user error
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (no heavy imports)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Segment objects consistently across groups of images with SAM2 and a few labelled "
            "reference masks per group. Without arguments, opens the app window."
        ),
        epilog=(
            "Exit codes: 0 all done; 1 some frames failed or the dry run found problems; "
            "2 usage or spec error; 130 interrupted."
        ),
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--infer",
        metavar="SPEC",
        help="run propagation headless for the project described by SPEC (a spec.json) and write "
        "pred_masks/{pk}.png; no window",
    )
    mode.add_argument(
        "--view",
        metavar="MASK.png",
        nargs="+",
        help="show these mask files over their images (found through the project they belong to)",
    )
    mode.add_argument(
        "--check",
        metavar=("SPEC", "KEY"),
        nargs="+",
        help="draw these frames' images and masks in the terminal (no display needed); keys may "
        "be partial and any letter case; without keys they are read from standard input, e.g. "
        "piped from --dry-run",
    )
    mode.add_argument(
        "--serve",
        action="store_true",
        help="serve the app to a web browser instead of opening a window; prints the URL "
        "(with its access token) and runs until Ctrl-C",
    )
    cli_quality.add_modes(mode)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")

    app = parser.add_argument_group("app window")
    app.add_argument("--project", metavar="SPEC", help="open this project (spec.json) in the app")
    app.add_argument(
        "--allow",
        nargs="+",
        metavar="FOLDER",
        help="with the window or --serve: folders (besides your home and the data folder) whose "
        "CSVs, images and checkpoints the app may open by path",
    )

    serve = parser.add_argument_group("--serve options")
    serve.add_argument(
        "--port", type=port, default=0, help="port to listen on (default: a free port)"
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; the token still guards "
        "access when you widen it)",
    )

    infer = parser.add_argument_group("--infer options")
    infer.add_argument(
        "--dry-run",
        action="store_true",
        help="check reference masks and images without running the model; prints a report, then "
        "the failing primary keys one per line; writes nothing",
    )
    infer.add_argument(
        "--decode-images",
        action="store_true",
        help="with --dry-run: fully decode every image instead of reading its header (slower)",
    )
    infer.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        metavar="N",
        help="targets per model batch (default 1; larger batches pay off on a GPU, not on a CPU)",
    )
    infer.add_argument(
        "--max-frames",
        type=positive_int,
        metavar="N",
        help="predict at most N targets per group (for trying settings)",
    )
    infer.add_argument(
        "--overwrite",
        action="store_true",
        help="predict targets again even when pred_masks/{pk}.png exists (default: skip them)",
    )
    infer.add_argument(
        "--groups",
        nargs="+",
        metavar="KEY",
        help="only these groups, by key or label (as listed in the app, e.g. Dataset=beetles)",
    )
    infer.add_argument(
        "--device",
        choices=DEVICES,
        help="device for this run, overriding the spec's device",
    )
    infer.add_argument(
        "--reference-scope",
        choices=("group", "all"),
        help="references each image is predicted from, overriding the spec: its group's own "
        "(group) or every reference of the project, as SST-GUI does (all)",
    )
    infer.add_argument(
        "--timings",
        action="store_true",
        help="after the run, print the time per image of each stage (read, model, post-process, "
        "write) and how busy each stage was, to show the bottleneck",
    )
    infer.add_argument(
        "--fast-decode",
        action="store_true",
        help="fast, not exact: decode JPEGs at half size (when that still covers the model size) "
        "before resizing to the model size; about a third of the reading cost on 12-MP photos; "
        "masks are not identical to the exact default (99.58-99.64%% of pixels agreed on the "
        "worst test photo)",
    )
    infer.add_argument(
        "--shard",
        metavar="I/N",
        help="run only shard I of N (I from 0 to N-1): the selected groups split into N parts "
        "balanced by target images, large groups in chunks; N processes (e.g. a SLURM array) "
        "cover every target once; with --dry-run prints the shard's plan",
    )
    infer.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="run the groups (or chunks of them) as tasks on this Dask scheduler's workers, "
        "which write into the project folder on a shared filesystem (needs sst-desktop[cluster])",
    )
    infer.add_argument(
        "--quiet",
        action="store_true",
        help="print nothing but errors (the summary is still saved under the project's runs/)",
    )

    check = parser.add_argument_group("--check options")
    check.add_argument(
        "--pred-only",
        action="store_true",
        help="show predictions only (default: a frame's prediction, else its reference)",
    )

    view = parser.add_argument_group("--view options")
    view.add_argument(
        "--out",
        metavar="OVERLAY.png",
        help="write the overlay image (several masks tiled with captions) to this file instead of "
        "opening a window; works without a display (with --export: the file or folder to write)",
    )
    view.add_argument(
        "--alpha",
        type=fraction,
        default=0.5,
        help="opacity of the mask colours in --out images, 0 to 1 (default 0.5)",
    )
    cli_quality.add_options(parser)
    return parser


def _check_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject flags given without the mode they belong to (argparse exits with code 2)."""
    infer_only = {
        "dry_run": "--dry-run",
        "decode_images": "--decode-images",
        "max_frames": "--max-frames",
        "overwrite": "--overwrite",
        "groups": "--groups",
        "device": "--device",
        "reference_scope": "--reference-scope",
        "shard": "--shard",
        "scheduler": "--scheduler",
        "quiet": "--quiet",
        "timings": "--timings",
        "fast_decode": "--fast-decode",
    }
    if not args.infer:
        for dest, flag in infer_only.items():
            if getattr(args, dest):
                parser.error(f"{flag} needs --infer SPEC")
        if args.batch_size != 1:
            parser.error("--batch-size needs --infer SPEC")
    if args.dry_run and (args.overwrite or args.max_frames):
        parser.error("--dry-run writes nothing: drop --overwrite/--max-frames")
    if args.scheduler and (args.dry_run or args.shard):
        parser.error("--scheduler runs the whole selection: drop --dry-run/--shard")
    if args.decode_images and not args.dry_run:
        parser.error("--decode-images needs --dry-run")
    if args.pred_only and not args.check:
        parser.error("--pred-only needs --check SPEC [KEY ...]")
    if not args.view and (args.alpha != 0.5 or (args.out and not args.export)):
        parser.error("--out/--alpha need --view MASK.png")
    if not args.serve and (args.port or args.host != "127.0.0.1"):
        parser.error("--port/--host need --serve")
    if args.allow and _headless(args):
        parser.error("--allow is for the app window or --serve")
    if args.project and (args.infer or args.view or args.serve or args.check):
        parser.error("--project opens the app window; use --infer SPEC for a headless run")
    cli_quality.check_combinations(parser, args)


def _check_display() -> None:
    """On Linux without a display the window cannot open: say what works instead.

    (The Qt environment itself is set by `app.prepare_environment`.)
    """
    if not sys.platform.startswith("linux"):
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError(
            "no display found (DISPLAY and WAYLAND_DISPLAY are unset): run `sst-desktop --serve` "
            "and open the printed URL in a browser, or use --view ... --out FILE"
        )


def _run_infer(args: argparse.Namespace) -> int:
    project = Project.open(args.infer)
    options = RunOptions(
        batch_size=args.batch_size,
        max_frames=args.max_frames,
        overwrite=args.overwrite,
        groups=args.groups,
        device=args.device,
        reference_scope=args.reference_scope,
        fast_decode=args.fast_decode,
    )
    if args.shard:
        index, count = parse_shard(args.shard)
        shards = plan_shards(project, options, count)
        options = options_for(options, shards[index], shard=f"{index}/{count}")
        if not args.quiet:
            print("\n".join(shard_plan_lines(shards, index)), flush=True)
    if args.dry_run:
        report = dry_run(project, options, decode=args.decode_images)
        if not args.quiet:
            for line in report.lines:
                print(line)
            if report.failing_pks:
                print(f"Failing primary keys ({len(report.failing_pks)}):")
        for pk in report.failing_pks:
            print(pk)
        return EXIT_OK if report.ok else EXIT_FAILED

    reporter = ProgressReporter(mode="quiet" if args.quiet else "auto")
    cancel = threading.Event()

    def on_sigint(signum, frame):  # first Ctrl-C: finish the batch and save; second: stop now
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\nStopping after the current batch (Ctrl-C again to stop now)...", file=sys.stderr)

    # Signal handlers can only be set from the main thread (main() may be called elsewhere).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    try:
        if args.scheduler:
            summary = run_on_cluster(
                project, args.scheduler, options, on_event=reporter, cancel=cancel
            )
        else:
            summary = run_inference(
                project, options, on_event=reporter, cancel=cancel, label=f"{PROG} --infer"
            )
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    if args.timings:
        if args.scheduler:
            print("\n".join(timing_lines(summary)))
        else:
            print("\n".join(format_timings(summary.timings)))
    if summary.cancelled:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_FAILED


def _run_view(args: argparse.Namespace) -> int:
    if args.out:
        out = render_overlays(args.view, args.out, alpha=args.alpha)
        print(out)
        return EXIT_OK
    for mask in args.view:
        find_mask_context(mask)  # fail here, with a clear line, rather than inside the window
    views = [os.path.abspath(m) for m in args.view]
    _check_display()
    if not _window_can_open():
        return int(serve(view=views, open_browser=True, fragment="#/view") or 0)
    return int(window.run_app(view=views) or 0)


def _serve_instead(spec_path: str | None) -> int:
    """The window's fallback: the same app served to the default browser, on that project."""
    fragment = ""
    if spec_path:
        entry = registry.register(spec_path)  # as the window does: a bad spec fails here, clearly
        fragment = f"#/p/{quote(str(entry['id']), safe='')}"
    return int(serve(open_browser=True, fragment=fragment) or 0)


def _window_can_open() -> bool:
    """Check that Qt can start here; if not, say why and how to fix it (one line) and return False."""
    check = preflight.check_window()
    if not check.ok:
        print(
            f"{PROG}: the window cannot open: {check.cause}. Serving the app to a web browser instead.",
            file=sys.stderr,
            flush=True,
        )
    return check.ok


def _headless(args: argparse.Namespace) -> bool:
    """Whether this command runs without the app's API (no window, no server)."""
    return bool(
        args.infer or args.evaluate or args.export or args.check or (args.view and args.out)
    )


def _allow_command_line_paths(args: argparse.Namespace) -> None:
    """Folders named on the command line may be opened by path through the app's API."""
    for folder in args.allow or ():
        if not os.path.isdir(folder):
            raise UserError(f"--allow {folder}: no such folder; name an existing folder")
        policy().allow(folder)
    if args.project:
        policy().allow(os.path.dirname(os.path.abspath(args.project)))
    for mask in args.view or ():
        policy().allow(os.path.dirname(os.path.dirname(os.path.abspath(mask))))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `sst-desktop`; returns the exit code."""
    if os.environ.get(preflight.PROBE_ENV):  # the window check's child (see app/preflight.py)
        return preflight.child_main()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_combinations(parser, args)
    except SystemExit as exc:  # --help, --version and usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    try:
        if not _headless(args):
            _allow_command_line_paths(args)
        if args.infer:
            return _run_infer(args)
        if args.view:
            return _run_view(args)
        if args.evaluate:
            return cli_quality.run_evaluate(args)
        if args.export:
            return cli_quality.run_export(args)
        if args.check:
            keys = args.check[1:] or keys_from_stdin()
            return check(args.check[0], keys, pred_only=args.pred_only)
        if args.serve:
            return int(serve(port=args.port, host=args.host) or 0)
        if args.project and not os.path.isfile(args.project):
            raise UserError(f"project spec {args.project} does not exist: check the path")
        _check_display()
        if not _window_can_open():
            return _serve_instead(args.project)
        return int(window.run_app(spec_path=args.project) or 0)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def console_main() -> None:
    """Console entry point: run `main`, then exit even if a GUI library left a thread blocked."""
    code = EXIT_FAILED
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left early (`sst-desktop ... | head`): not an error worth a traceback.
        # Point stdout at devnull so the flush at interpreter exit cannot fail again
        # (as Python's signal docs recommend).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    # pywebview answers each JS call on a non-daemon thread; one caught by the window closing
    # waits forever and would keep the process alive after the window is gone.
    lingering = [
        t
        for t in threading.enumerate()
        if t.is_alive() and not t.daemon and t is not threading.main_thread()
    ]
    if lingering:
        os._exit(code)
    sys.exit(code)
