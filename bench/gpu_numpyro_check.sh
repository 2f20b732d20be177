#!/usr/bin/env bash
# The JAX/GPU path, end to end on a GPU machine: `--backend bambi --sampler numpyro`.
#
# Run from the repo root on a machine with a CUDA build of jax + numpyro. Wheels for the
# packages that machine lacks may sit in .whl/ (installed into /tmp/site, put first on
# PYTHONPATH). Writes its logs and the run's run.json under $OUT (default /tmp/gpu_check).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
nvidia-smi -L
python3 - <<'PY' 2>&1 | tee "$OUT/versions.txt"
import importlib, jax
for name in ["jax", "jaxlib", "numpyro", "pymc", "pytensor", "bambi", "arviz", "numba",
             "scipy", "numpy", "pandas", "xarray", "matplotlib"]:
    print(name, importlib.import_module(name).__version__)
print("devices", jax.devices())
PY
# 1. Both backends under numpyro on a small survey (collapsed must refuse, bambi must run).
timeout 150 python3 bench/check_jax_paths.py --n 2000 --draws 200 2>&1 | tee "$OUT/check_paths.txt"
# 2. The user's command on the shipped 40,000-student file, 4 chains on the GPU.
start=$(date +%s)
timeout "${FIT_TIMEOUT:-360}" python3 scripts/fit.py --backend bambi --sampler numpyro \
  --draws "${DRAWS:-500}" --tune "${DRAWS:-500}" --chains 4 --seed 1 --out /tmp/gpu_runs \
  --name bambi_numpyro_gpu --no-progress --allow-failed 2>&1 | tee "$OUT/fit.txt"
echo "fit.py exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/fit.txt"
cp /tmp/gpu_runs/bambi_numpyro_gpu/run.json "$OUT/run.json" 2>/dev/null
ls -R /tmp/gpu_runs > "$OUT/run_tree.txt" 2>&1
