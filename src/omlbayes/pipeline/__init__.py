"""Stage 8, the pipeline: the survey run, the formula run, the graded run, imputation, CLI."""
