"""The collapse report: activations over data, counts per stage, plots."""
