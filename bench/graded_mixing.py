"""Mixing of the graded model on simulated data: leapfrog steps, ESS per gradient.

    python bench/graded_mixing.py N_STUDENTS ADAPTATION TUNE DRAWS

Simulates N students (seed 5), fits models/graded.toml's model with nutpie (2 chains,
seed 1, ``adaptation`` = diag | low_rank | ...) and prints one JSON line: mean leapfrog
steps, the smallest bulk ESS over the stored parameters (not the student values) and
where, ESS per 1,000 gradient evaluations of the kept draws (independent of the load on
a shared machine), the process CPU time and the wall time. bench/GRADED_RESULTS.md says
which commit each reported line came from.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import arviz as az
import nutpie
from threadpoolctl import threadpool_limits

from omlbayes.backends.graded import MeasurementSettings, build_model, graded_data, initial_point
from omlbayes.data.scale import build_index
from omlbayes.model.design import build_layout
from omlbayes.model.spec import load_spec
from omlbayes.simulate.survey import simulate_survey

ITEMS = tuple(f"item_{k}" for k in range(1, 7))


def main(argv: list[str]) -> int:
    n, adaptation, tune, draws = int(argv[0]), argv[1], int(argv[2]), int(argv[3])
    sim = simulate_survey(n_students=n, n_schools=max(10, n // 80), seed=5)
    frame = build_index(sim.frame).frame
    frame = frame.assign(age_c=frame["age"] - frame["age"].mean())
    spec = load_spec("graded")
    layout = build_layout(frame, spec)
    settings = MeasurementSettings(items=ITEMS)
    data = graded_data(frame, layout, ITEMS)
    model = build_model(data, layout, spec, settings)
    compiled = nutpie.compile_pymc_model(
        model, initial_points=initial_point(data, settings), jitter_rvs=set()
    )
    t0 = time.perf_counter()
    with threadpool_limits(1, user_api="blas"):
        tree = nutpie.sample(
            compiled, draws=draws, tune=tune, chains=2, cores=2, seed=1, progress_bar=False,
            save_warmup=False, target_accept=0.8, adaptation=adaptation,
        )  # fmt: skip
    wall = time.perf_counter() - t0
    post = tree["posterior"].to_dataset()
    stats = tree["sample_stats"].to_dataset()
    keep = [v for v in post.data_vars if v != "theta"]
    ess = az.ess(post[keep])
    mins = {v: float(ess[v].min()) for v in keep}
    worst = min(mins, key=mins.get)
    n_grad = float(stats["n_steps"].sum())
    result = {
        "n": n,
        "adaptation": adaptation,
        "tune": tune,
        "draws": draws,
        "mean_leapfrog_steps": round(float(stats["n_steps"].mean()), 1),
        "divergences": int(stats["diverging"].sum()),
        "min_ess_bulk": round(mins[worst]),
        "min_ess_at": worst,
        "ess_per_1000_gradients": round(1000 * mins[worst] / n_grad, 2),
        "max_r_hat": round(max(float(az.rhat(post[keep])[v].max()) for v in keep), 4),
        "min_ess_by_parameter": {k: round(v) for k, v in mins.items()},
        "cpu_s": round(resource.getrusage(resource.RUSAGE_SELF).ru_utime, 1),
        "wall_s": round(wall, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
