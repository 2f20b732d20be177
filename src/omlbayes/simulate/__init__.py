"""A synthetic survey with known truth, for tests and studies. No library module imports this."""
