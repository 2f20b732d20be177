"""Stage 6, figures drawn from computed tables and saved posteriors; nothing here fits."""
