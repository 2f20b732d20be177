"""Stage 7, the report: the HTML page, findings, school pages, run comparison."""
