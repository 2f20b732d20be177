"""Stage 3, the fit: the collapsed exact backend (dense and sparse kernels), Bambi, graded."""
