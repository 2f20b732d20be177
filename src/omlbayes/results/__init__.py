"""Stage 5, results: the run record and folder, output options, tables, the disclosure rule."""
