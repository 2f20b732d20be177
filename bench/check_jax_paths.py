"""Which fits run under the JAX samplers (numpyro)? A quick, honest check.

Needs jax + numpyro importable (``pip install -e .[jax]``, or a PYTHONPATH holding them).
Tries, on a small simulated survey:

1. the collapsed backend with ``sampler="numpyro"`` (expected to fail: the marginal
   likelihood Op has a numba kernel and a numpy ``perform``, no JAX implementation);
2. the Bambi backend with ``sampler="numpyro"`` (expected to work, on CPU or GPU).

    python bench/check_jax_paths.py [--n 2000] [--draws 200] [--backends bambi] [--progress]
"""

from __future__ import annotations

import argparse
import time
import traceback
import warnings


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--backends", nargs="+", default=["collapsed", "bambi"])
    p.add_argument("--progress", action="store_true", help="show the sampler's progress bar")
    args = p.parse_args()
    warnings.filterwarnings("ignore")

    import jax

    from omlbayes.criticism import diagnose
    from omlbayes.data import scale
    from omlbayes.model.spec import load_spec
    from omlbayes.pipeline.survey_run import fit_frame
    from omlbayes.simulate.survey import simulate_survey

    print(f"jax {jax.__version__}, devices: {jax.devices()}")
    frame = scale.build_index(simulate_survey(n_students=args.n, n_schools=80).frame).frame
    base = load_spec("flagship")
    kw = {"draws": args.draws, "tune": args.draws, "chains": args.chains}

    for backend in args.backends:
        spec = base.with_sampler(backend=backend, sampler="numpyro", **kw)
        t0 = time.perf_counter()
        try:
            tree = fit_frame(frame, spec, seed=1, progressbar=args.progress).tree
            d = diagnose.check(tree)
            print(
                f"{backend} + numpyro: OK in {time.perf_counter() - t0:.1f} s; "
                f"max R-hat {d['max_r_hat']:.3f}, min ESS bulk {d['min_ess_bulk']:.0f}, "
                f"{d['divergences']} divergences"
            )
            stats_ds = tree["sample_stats"].to_dataset()
            for name in ("n_steps", "tree_depth", "step_size"):
                if name in stats_ds:
                    print(f"   mean {name}: {float(stats_ds[name].mean()):.3g}")
        except Exception as err:  # report, do not hide
            last = traceback.format_exception_only(err)[-1].strip()
            print(f"{backend} + numpyro: FAILS ({type(err).__name__}): {last[:300]}")


if __name__ == "__main__":
    main()
