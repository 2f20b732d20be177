"""Studies (make validate): recovery, SBC, REML agreement. No library module imports this."""
