"""Errors, atomic files, config loading, the work-dir lock, text tables."""
