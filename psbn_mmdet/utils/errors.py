"""The tools' one error convention: bad input is one line on stderr, exit 2.

Library code raises :class:`UserError` (or a subclass) with a message meant
for the user; :func:`psbn_mmdet.cli.run_tool` prints it as
``<prog>: error: <message>`` and exits with :data:`EXIT_USAGE`, as argparse
does for a bad flag.  Nothing else of the package prints errors.
"""
from __future__ import annotations

#: exit status of every tool on bad input (argparse's)
EXIT_USAGE = 2


class UserError(Exception):
    """Bad input; ``str(error)`` is one line for the user."""


def one_line(error: BaseException, with_type: bool = True) -> str:
    """An exception's message on one line, for the user.

    ``torch.load``'s refusals put the reason after their advice: the reason
    is kept.  mmengine's registry nests causes over several lines: they are
    joined.  The exception's class name goes first (``with_type``) unless it
    is a :class:`UserError`, whose message is written for the user.
    """
    text = str(error)
    _, unpickler, reason = text.partition('WeightsUnpickler error:')
    if unpickler:
        text = reason.strip().split('. ')[0]
    text = ' '.join(text.split())
    if isinstance(error, UserError) or not with_type:
        return text or type(error).__name__
    return f'{type(error).__name__}: {text}' if text else type(error).__name__
