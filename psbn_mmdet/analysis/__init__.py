"""The collapse report: activations over a config's images, counts per stage, plots."""
from .probe import ActivationProbe, extents
from .report import (BNLayer, Report, bn_layers, collapse_report, format_table,
                     notes, report_files, report_json)

__all__ = ['ActivationProbe', 'BNLayer', 'Report', 'bn_layers',
           'collapse_report', 'extents', 'format_table', 'notes',
           'report_files', 'report_json']
