"""Hierarchical Bayesian re-analysis of a school monitor's survey (the OML factsheet).

The public API (``docs/api.md``)::

    import omlbayes as ob
    run = ob.open_run("outputs/<run>")
    am = run.adjusted_means(by="gender", schools="any", composition="pooled")
    change = am.sel(gender="girl", wave="2022") - am.sel(gender="girl", wave="2018")
    ob.summarise(change, options=run.options)
"""

__version__ = "0.2.0"
__all__ = ["Run", "open_run", "summarise"]


def __getattr__(name: str):
    # imported on first use: ``import omlbayes`` stays light (no PyMC, no xarray)
    if name in ("open_run", "Run"):
        from omlbayes.results import runs

        return getattr(runs, name)
    if name == "summarise":
        from omlbayes.results.summarise import summarise_draws

        return summarise_draws
    raise AttributeError(f"module 'omlbayes' has no attribute {name!r}")
