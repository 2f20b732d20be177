"""Hierarchical Bayesian re-analysis of the OML teacher-relations factsheet."""

__version__ = "0.1.0"
