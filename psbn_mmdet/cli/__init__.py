"""The command-line tools: argument parsing, input checks, printing, writing.

The only layer that knows a flag's name, prints and exits.  Each tool is an
argument parser and calls into the package: :mod:`.runner` (``train``,
``test``), :mod:`.report` (``collapse_report``), :mod:`.export`
(``export_bn``), :mod:`.prune` (``prune_dead``).  They are installed as
console scripts (``psbn-train``...) and called by the checkout's
``tools/*.py`` shims, which keep mmdet's names.  A tool module imports what
its tool needs, so the collapse report never loads the training stack.

One error convention for every tool (:func:`run_tool`): bad input is one
line, ``<prog>: error: <message>``, on stderr and exit status 2.
"""
from .common import run_tool, tool

__all__ = ['run_tool', 'tool']
