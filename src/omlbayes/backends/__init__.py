"""Fitting backends: ``collapsed`` (exact, sufficient statistics) and ``bambi`` (reference)."""
