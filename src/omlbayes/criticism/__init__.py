"""Stage 4, criticism: the diagnostics gate, LOO, predictive checks, prior sensitivity."""
