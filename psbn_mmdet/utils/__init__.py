"""What every layer may use: errors, atomic files, config loading, the work-dir lock, text tables."""
from .config import load_config
from .errors import EXIT_USAGE, UserError, one_line
from .files import check_writable, write_atomically
from .table import text_table

__all__ = ['EXIT_USAGE', 'UserError', 'check_writable', 'load_config',
           'one_line', 'text_table', 'write_atomically']
