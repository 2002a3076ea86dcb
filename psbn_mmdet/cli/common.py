"""What every tool shares: the error convention and argument types."""
from __future__ import annotations

import argparse
import sys

from ..core.criteria import ACTIVATION_THRESHOLD, GAMMA_THRESHOLD
from ..utils.errors import EXIT_USAGE, UserError, one_line
from ..utils.files import check_writable


def run_tool(prog: str, main, argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; a :class:`UserError` becomes one line and exit 2."""
    try:
        return main(argv) or 0
    except UserError as error:
        print(f'{prog}: error: {one_line(error)}', file=sys.stderr)
        return EXIT_USAGE


def tool(prog: str, main):
    """A console-script entry point for ``main``."""

    def entry(argv: list[str] | None = None) -> None:
        sys.exit(run_tool(prog, main, argv))

    entry.__name__ = f'{prog}_entry'
    entry.__doc__ = main.__doc__
    return entry


def check_at_least_one(flag: str, value: int | None) -> None:
    """One line naming ``flag`` unless ``value`` is None or at least 1."""
    if value is not None and value < 1:
        raise UserError(f'{flag} must be at least 1 (got {value})')


def check_positive(flag: str, value: float) -> None:
    """One line naming ``flag`` unless ``value`` is positive."""
    if not value > 0:
        raise UserError(f'{flag} must be positive (got {value})')


def check_output_paths(files=(), dirs=()) -> None:
    """Fail now, before any work, if an output cannot be written later."""
    for path in files:
        if path:
            check_writable(path)
    for path in dirs:
        if path:
            check_writable(path, is_dir=True)


def add_thresholds(parser: argparse.ArgumentParser, gamma_means: str) -> None:
    """``--gamma-thr`` (``gamma_means`` when |γ| is below it) and
    ``--act-thr`` (dead below it), with the criteria's defaults."""
    parser.add_argument('--gamma-thr', type=float, default=GAMMA_THRESHOLD,
                        help=f'{gamma_means} when |γ| < this '
                        '(default: %(default)g)')
    parser.add_argument('--act-thr', type=float, default=ACTIVATION_THRESHOLD,
                        help='dead when the max post-ReLU activation < this '
                        '(default: %(default)g)')


def check_thresholds(args) -> None:
    """One line naming the threshold flag that is not positive."""
    check_positive('--gamma-thr', args.gamma_thr)
    check_positive('--act-thr', args.act_thr)
