"""The ``stylize-fast`` command (also ``python -m stylize_fast``).

Each subcommand lives in ``stylize_fast/commands/<name>.py`` and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Modules import their heavy dependencies inside
``run`` so that ``stylize-fast --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("stylize", "train", "bench", "export", "experiment", "evaluate-video", "info")


def _unavailable(name: str, exc: ImportError):
    def run(args) -> int:
        raise RuntimeError(f"the {name} command cannot load: {type(exc).__name__}: {exc}")
    return run


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="stylize-fast",
        description="Fast feed-forward neural style transfer with fused instance-norm kernels.")
    parser.add_argument("--version", action="version", version=f"stylize_fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            # Modules are named with underscores (evaluate-video -> commands/evaluate_video.py).
            module = importlib.import_module(f"{__package__}.commands.{name.replace('-', '_')}")
        except ImportError as exc:
            # Say why a subcommand is missing instead of dropping it from the list.
            cmd = sub.add_parser(name, help=f"(unavailable: {exc})", add_help=False)
            cmd.set_defaults(_run=_unavailable(name, exc), _unavailable=True)
            continue
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "_unavailable", False):  # its arguments are unknown
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        # Clear one-line errors for bad input; tracebacks stay for real bugs (other types).
        print(f"stylize-fast {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
