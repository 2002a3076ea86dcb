"""Capacity study (issue 23): where does filter collapse cost accuracy?

The collapse study's runs (:mod:`research.collapse_study`) on harder,
generated tasks (:mod:`.data`) at several network widths, to find settings
where accuracy still rises steeply with width (capacity binds), and there
whether collapse moves a network down that curve and whether psBN's revived
channels buy it back (:mod:`.contribution`).  ``python -m
research.capacity_study``; tables: :mod:`.summary`; results:
docs/capacity_study_notes.md.
"""
