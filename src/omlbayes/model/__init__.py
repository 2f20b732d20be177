"""Stage 2, the model: specs, the design and its statistics, priors, the estimands."""
