"""The calibrated simulator: composition, measurement, determinism and the known truth."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omlbayes.constants import ITEM_COLUMNS
from omlbayes.data import schema
from omlbayes.data.scale import build_index, cronbach_alpha
from omlbayes.errors import SpecError
from omlbayes.simulate.survey import (
    COVARIATES,
    SimulationParams,
    draw_items,
    eta_table,
    expected_item_mean,
    random_truth,
    simulate_survey,
    true_effects,
    true_surveyed_effects,
    truth_path,
    write_simulation,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "oml_synthetic.csv"

TABLE_1 = {  # factsheet Table 1, percentages over 2014-2022
    "gender": {"boy": 49.56, "girl": 50.44},
    "school_type": {"vmbo_bk": 24.27, "vmbo_gt": 27.33, "havo": 25.37, "vwo": 23.03},
    "parent_edu": {"max_mbo": 34.16, "hbo": 25.83, "wo": 14.04, "unknown": 25.97},
    "region": {
        "noord_limburg": 19.91,
        "midden_limburg": 23.63,
        "sittard_geleen": 15.43,
        "maastricht_heuvelland": 18.71,
        "parkstad_limburg": 22.32,
    },
}


@pytest.fixture(scope="module")
def sim():
    return simulate_survey()


@pytest.fixture(scope="module")
def truth(sim):
    return true_effects(sim).set_index(["breakdown", "group", "wave"])["value"]


def _icc_anova(y: np.ndarray, groups: np.ndarray) -> float:
    """One-way ANOVA estimator of the intraclass correlation (unbalanced groups)."""
    df = pd.DataFrame({"y": y, "g": groups})
    by = df.groupby("g")["y"]
    n, k, total = by.size(), by.ngroups, len(df)
    msb = float((n * (by.mean() - df["y"].mean()) ** 2).sum() / (k - 1))
    msw = float(((df["y"] - by.transform("mean")) ** 2).sum() / (total - k))
    n0 = (total - float((n**2).sum()) / total) / (k - 1)
    return (msb - msw) / (msb + (n0 - 1) * msw)


def _read_survey(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    for col in schema.CATEGORICAL_COLUMNS:
        levels = list(schema.Levels().of(col))
        frame[col] = pd.Categorical(frame[col], categories=levels, ordered=True)
    for col in ITEM_COLUMNS:
        frame[col] = frame[col].astype("Int64")
    return frame


# ---- composition -----------------------------------------------------------------------


@pytest.mark.parametrize("column", sorted(TABLE_1))
def test_table_1_shares_within_one_point(sim, column):
    shares = sim.frame[column].value_counts(normalize=True) * 100
    for level, target in TABLE_1[column].items():
        assert abs(shares[level] - target) < 1.0, (column, level, shares[level])


def test_waves_sizes_and_drift(sim):
    frame = sim.frame
    assert len(frame) == 40_000
    size = frame["wave"].value_counts()
    normal = size[["2014", "2016", "2018", "2022"]].mean()
    for wave in ("2020_0", "2020_1", "2020_2"):
        assert 0.25 < size[wave] / normal < 0.42
    share = pd.crosstab(frame["wave"], frame["parent_edu"], normalize="index")
    assert share.loc["2022", "unknown"] - share.loc["2014", "unknown"] > 0.02
    vwo = pd.crosstab(frame["wave"], frame["school_type"], normalize="index")["vwo"]
    assert vwo["2022"] > vwo["2014"]


def test_schools_nested_in_regions_with_realistic_types(sim):
    frame = sim.frame
    assert frame.groupby("school_id")["region"].nunique().max() == 1
    assert 70 <= frame["school_id"].nunique() <= 80
    types = frame.groupby("school_id")["school_type"].nunique()
    assert (types == 1).any() and (types == 4).any()
    schools_per_wave = frame.groupby("wave", observed=True)["school_id"].nunique()
    assert (schools_per_wave < frame["school_id"].nunique()).all()
    per_school = frame.groupby("school_id")["wave"].nunique()
    assert (per_school < len(schema.WAVES)).any()


def test_age_of_grade_3_students(sim):
    age = sim.frame["age"]
    assert 14.8 < age.mean() < 15.0
    assert age.between(13.0, 18.0).all()
    by_type = sim.frame.groupby("school_type", observed=True)["age"].mean()
    assert by_type["vmbo_bk"] > by_type["havo"] > by_type["vwo"]


# ---- measurement -----------------------------------------------------------------------


def test_items_alpha_mean_and_neutral_answers(sim):
    items = sim.frame[list(ITEM_COLUMNS)]
    assert all(str(items[c].dtype) == "Int64" for c in ITEM_COLUMNS)
    answers = items.to_numpy(dtype="float64", na_value=np.nan)
    assert set(np.unique(answers[~np.isnan(answers)])) == {1, 2, 3, 4, 5}
    assert abs(cronbach_alpha(items) - 0.88) <= 0.02
    assert abs(np.nanmean(answers) - 2.99) <= 0.05
    for col in ITEM_COLUMNS:  # neutral is the most common answer of every item
        assert items[col].value_counts().idxmax() == 3
    missing = items.isna().mean()
    assert missing.between(0.01, 0.035).all()
    scaled = build_index(sim.frame)
    n_excluded = sum(scaled.exclusions.values())
    assert 0 < n_excluded < 0.01 * len(sim.frame)


def test_icc_of_the_standardized_index_is_a_few_percent(sim):
    scaled = build_index(sim.frame).frame
    icc = _icc_anova(scaled["index"].to_numpy(), scaled["school_id"].to_numpy())
    assert 0.01 < icc < 0.08


# ---- determinism and the shipped files ---------------------------------------------------


def test_same_seed_same_frame_other_seed_other_frame():
    a = simulate_survey(n_students=2000, n_schools=20, seed=7)
    b = simulate_survey(n_students=2000, n_schools=20, seed=7)
    c = simulate_survey(n_students=2000, n_schools=20, seed=8)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert not a.frame.equals(c.frame)
    assert a.frame["student_id"].is_unique
    assert a.frame["school_id"].nunique() <= 20


def test_shipped_csv_and_truth_equal_a_regeneration(sim, truth):
    pd.testing.assert_frame_equal(_read_survey(SHIPPED), sim.frame)
    shipped_truth = pd.read_csv(truth_path(SHIPPED), dtype={"wave": "string", "group": "string"})
    shipped_truth = shipped_truth.set_index(["breakdown", "group", "wave"])["value"]
    assert shipped_truth.index.equals(truth.index.astype(shipped_truth.index.dtype))
    np.testing.assert_allclose(shipped_truth.to_numpy(), truth.to_numpy(), atol=2e-6)


def test_bad_sizes_raise_spec_error():
    with pytest.raises(SpecError, match="n_schools"):
        simulate_survey(n_students=2000, n_schools=3)
    with pytest.raises(SpecError, match="n_students"):
        simulate_survey(n_students=50, n_schools=20)


def test_script_writes_both_files_and_maps_errors(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("simulate_cli", ROOT / "scripts" / "simulate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "small.csv"
    assert cli.main(["--n-students", "1000", "--n-schools", "10", "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 1000
    assert set(pd.read_csv(tmp_path / "small_truth.csv").columns) == {
        "breakdown",
        "group",
        "wave",
        "value",
        "latent_value",
    }
    assert cli.main(["--n-schools", "2", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "x.csv").exists()


# ---- the truth -----------------------------------------------------------------------


def test_truth_has_every_target_and_zero_pooled(truth):
    expected = set()
    for cols in ((), *schema.SUBGROUP_BREAKDOWNS):
        for levels in itertools.product(*(schema.Levels().of(c) for c in cols)):
            for wave in (*schema.WAVES, "all"):
                expected.add((schema.breakdown_name(cols), schema.group_label(levels), wave))
    assert set(truth.index) == expected
    assert len(truth) == len(expected)
    assert truth[("overall", "all", "all")] == pytest.approx(0.0, abs=1e-12)
    assert truth.abs().max() < 1.0  # small effects: a few hundredths to a few tenths


def test_truth_reproduces_the_findings(truth):
    def t(breakdown: str, group: str, wave: str = "all") -> float:
        return float(truth[(breakdown, group, wave)])

    # 1-3: decline 2014 -> 2018; 2020_1 > 2020_2; 2022 back to about 2018
    assert t("overall", "all", "2014") - t("overall", "all", "2018") > 0.05
    assert t("overall", "all", "2020_1") - t("overall", "all", "2020_2") > 0.08
    assert abs(t("overall", "all", "2022") - t("overall", "all", "2018")) < 0.03
    assert t("overall", "all", "2022") > t("overall", "all", "2020_2")
    # 4: vwo slightly better (every wave); vwo declines 2016-2018, stable after, 2020_0 outlier
    others = [s for s in schema.SCHOOL_TYPES if s != "vwo"]
    for wave in (*schema.WAVES, "all"):
        assert all(t("school_type", "vwo", wave) > t("school_type", s, wave) for s in others)
    vwo = {w: t("school_type", "vwo", w) for w in schema.WAVES}
    assert vwo["2016"] - vwo["2018"] > 0.1
    after = [vwo[w] for w in ("2018", "2020_1", "2020_2", "2022")]
    assert max(after) - min(after) < 0.05
    assert vwo["2020_0"] - max(after) > 0.05
    # 5: vmbo_bk dips at 2020_2 and is flat otherwise; vmbo_gt and havo without large changes
    bk = {w: t("school_type", "vmbo_bk", w) for w in schema.WAVES}
    rest = [v for w, v in bk.items() if w != "2020_2"]
    assert min(rest) - bk["2020_2"] > 0.15 and max(rest) - min(rest) < 0.06
    for school_type in ("vmbo_gt", "havo"):
        values = [t("school_type", school_type, w) for w in schema.WAVES]
        assert max(values) - min(values) < 0.1
    # 6: boys better than girls in every type, largest gap in vwo
    gap = {
        s: t("gender x school_type", f"boy:{s}") - t("gender x school_type", f"girl:{s}")
        for s in schema.SCHOOL_TYPES
    }
    assert min(gap.values()) > 0 and max(gap, key=gap.get) == "vwo"
    # 7: girls 2020_1 > 2020_0; 2022 > 2020_2; both fall after summer, girls more
    girls = {w: t("gender", "girl", w) for w in schema.WAVES}
    boys = {w: t("gender", "boy", w) for w in schema.WAVES}
    assert girls["2020_1"] - girls["2020_0"] > 0.03
    assert girls["2022"] - girls["2020_2"] > 0.08 and girls["2022"] > girls["2020_0"]
    for before in ("2020_0", "2020_1"):
        fall_boys, fall_girls = boys[before] - boys["2020_2"], girls[before] - girls["2020_2"]
        assert 0 < fall_boys < fall_girls
    assert boys["2020_0"] > boys["2018"]
    # 8: the 2014-2018 decline mainly among hbo/wo; all rise at 2020_1, fall at 2020_2;
    # in 2022 all rise, most clearly max_mbo
    decline = {
        p: t("parent_edu", p, "2014") - t("parent_edu", p, "2018") for p in schema.PARENT_EDU
    }
    assert min(decline["hbo"], decline["wo"]) > 2 * max(decline["max_mbo"], decline["unknown"])
    rise_2022 = {}
    for p in schema.PARENT_EDU:
        assert t("parent_edu", p, "2020_1") > t("parent_edu", p, "2018")
        assert t("parent_edu", p, "2020_1") >= t("parent_edu", p, "2020_0") - 0.01
        assert t("parent_edu", p, "2020_2") < t("parent_edu", p, "2020_1")
        rise_2022[p] = t("parent_edu", p, "2022") - t("parent_edu", p, "2020_2")
    assert min(rise_2022.values()) > 0 and max(rise_2022, key=rise_2022.get) == "max_mbo"
    # 9: in vmbo_bk the wo-parent group is the weakest; boys > girls at every level
    bk_edu = {p: t("parent_edu x school_type", f"{p}:vmbo_bk") for p in schema.PARENT_EDU}
    assert min(bk_edu, key=bk_edu.get) == "wo"
    for p in schema.PARENT_EDU:
        assert t("parent_edu x gender", f"{p}:boy") > t("parent_edu x gender", f"{p}:girl")
    # 10: regions
    r = {g: {w: t("region", g, w) for w in schema.WAVES} for g in schema.REGIONS}
    for g in ("noord_limburg", "midden_limburg", "parkstad_limburg"):
        assert abs(r[g]["2014"] - r[g]["2018"]) < 0.03
        assert r[g]["2022"] > max(r[g]["2020_2"], r[g]["2018"])
    for g in ("sittard_geleen", "maastricht_heuvelland"):
        assert r[g]["2014"] - r[g]["2018"] > 0.1
        assert r[g]["2022"] < min(r[g]["2020_2"], r[g]["2018"])
    for g in ("noord_limburg", "parkstad_limburg"):
        assert abs(r[g]["2020_1"] - r[g]["2020_2"]) < 0.03
    for g in ("midden_limburg", "sittard_geleen", "maastricht_heuvelland"):
        assert r[g]["2020_1"] - r[g]["2020_2"] > 0.08
    # 11: region x school type
    rt = {
        (g, s): t("region x school_type", f"{g}:{s}")
        for g in schema.REGIONS
        for s in schema.SCHOOL_TYPES
    }
    maas = "maastricht_heuvelland"
    for g in schema.REGIONS:
        if g != maas:
            assert rt[(maas, "vmbo_bk")] < rt[(g, "vmbo_bk")]
            assert rt[(maas, "vmbo_gt")] > rt[(g, "vmbo_gt")]
    for g in ("midden_limburg", "sittard_geleen", "parkstad_limburg"):
        assert rt[("noord_limburg", "vwo")] < rt[(g, "vwo")]
    for g in ("midden_limburg", "parkstad_limburg"):
        assert rt[(maas, "vwo")] < rt[(g, "vwo")]
    # 12: unknown parental education lower in maastricht than elsewhere
    unknown = {g: t("parent_edu x region", f"unknown:{g}") for g in schema.REGIONS}
    assert min(unknown, key=unknown.get) == maas


def test_analytic_truth_agrees_with_monte_carlo_counterfactual():
    small = simulate_survey(n_students=2000, n_schools=20, seed=11)
    p = small.params
    targets = [
        (("gender",), ("girl",), "2020_2"),
        (("region", "school_type"), ("maastricht_heuvelland", "vmbo_bk"), "2018"),
        ((), (), "2014"),
        (("parent_edu",), ("wo",), "all"),
    ]
    truth = true_effects(small, breakdowns=tuple(sorted({b for b, _, _ in targets})))
    truth = truth.set_index(["breakdown", "group", "wave"])["value"]
    scaled = build_index(small.frame)
    rows = scaled.frame
    codes = {c: rows[c].cat.codes.to_numpy().astype("int64") for c in COVARIATES}
    age_term = p.age_slope * (rows["age"].to_numpy() - p.age_center)
    table = eta_table(p)
    reps = 100

    def mc_mean(substitute: dict[str, int]) -> float:
        # a new school and new student noise for every replicate row; the same
        # random numbers for every target (common random numbers)
        rng = np.random.default_rng(123)
        idx = tuple(
            np.full(len(rows), substitute[c]) if c in substitute else codes[c] for c in COVARIATES
        )
        eta = np.tile(table[idx] + age_term, reps)
        theta = eta + p.school_sd * rng.standard_normal(eta.size)
        theta = theta + p.student_sd * rng.standard_normal(eta.size)
        return float(draw_items(theta, p, rng).mean())

    pooled = mc_mean({})
    for cols, levels, wave in targets:
        sub = {c: schema.Levels().of(c).index(lv) for c, lv in zip(cols, levels, strict=True)}
        if wave != "all":
            sub["wave"] = schema.WAVES.index(wave)
        mc = (mc_mean(sub) - pooled) / scaled.raw_sd
        key = (schema.breakdown_name(cols), schema.group_label(levels), wave)
        assert mc == pytest.approx(truth[key], abs=0.01), key


def test_small_and_custom_params_work():
    small = simulate_survey(n_students=2000, n_schools=20)
    assert len(small.frame) == 2000
    assert set(small.frame["region"].unique()) == set(schema.REGIONS)
    truth = true_effects(small, breakdowns=((), ("gender",)))
    assert len(truth) == (1 + 2) * (len(schema.WAVES) + 1)
    flat = SimulationParams(school_sd=0.0)
    assert simulate_survey(n_students=2000, n_schools=20, params=flat).params.school_sd == 0.0
    with pytest.raises(SpecError, match="wave_effect"):
        SimulationParams(wave_effect={"2014": 0.0})
    with pytest.raises(SpecError, match="breakdown"):
        true_effects(small, breakdowns=(("wave",),))


@pytest.mark.bench
def test_one_million_students_is_fast():
    import time

    start = time.perf_counter()
    big = simulate_survey(n_students=1_000_000)
    assert time.perf_counter() - start < 60
    assert len(big.frame) == 1_000_000 and big.frame["student_id"].is_unique


HARDER = SimulationParams(
    school_wave_sd=0.3,
    student_sd_by_school_type={"vmbo_bk": 0.6, "vmbo_gt": 1.0, "havo": 1.2, "vwo": 1.4},
    three_way_sd=0.15,
)


def _latent_residual(sim) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows and their latent trait minus eta (school + school x wave + student parts)."""
    rows = sim.frame
    codes = tuple(rows[c].cat.codes.to_numpy().astype("int64") for c in COVARIATES)
    eta = sim.eta()[codes] + sim.params.age_slope * (rows["age"].to_numpy() - sim.params.age_center)
    return rows, sim.latent - eta


def test_harder_options_are_off_by_default_and_change_only_their_own_draws():
    assert not SimulationParams().harder and HARDER.harder
    base = simulate_survey(n_students=3000, n_schools=20, seed=4)
    hard = simulate_survey(n_students=3000, n_schools=20, seed=4, params=HARDER)
    assert base.three_way is None and hard.three_way is not None
    same = ["student_id", "school_id", "region", "wave", "gender", "school_type", "parent_edu"]
    pd.testing.assert_frame_equal(base.frame[same], hard.frame[same])
    assert not np.allclose(base.latent, hard.latent)
    with pytest.raises(SpecError, match="school_wave_sd"):
        SimulationParams(school_wave_sd=-0.1)
    with pytest.raises(SpecError, match="unknown level"):
        SimulationParams(student_sd_by_school_type={"gymnasium": 1.0})
    with pytest.raises(SpecError, match="three_way_pairs"):
        SimulationParams(three_way_pairs=(("wave", "gender"),))


def test_harder_structure_is_in_the_latent_trait():
    sim = simulate_survey(n_students=60_000, n_schools=40, seed=8, params=HARDER.__class__(
        school_sd=0.0, school_wave_sd=0.3,
        student_sd_by_school_type=HARDER.student_sd_by_school_type,
    ))  # fmt: skip
    rows, resid = _latent_residual(sim)
    frame = pd.DataFrame(
        {"r": resid, "s": rows["school_id"], "w": rows["wave"], "t": rows["school_type"]}
    )
    cell = frame.groupby(["s", "w", "t"], observed=True)["r"]
    within = (frame["r"] - cell.transform("mean")).groupby(frame["t"], observed=True).std()
    for t, sd in HARDER.student_sd_by_school_type.items():
        assert within[t] == pytest.approx(sd, rel=0.05), t  # residual SD per school type
    # school x wave: variance of the (school, wave) means beyond their sampling noise
    by_sw = frame.groupby(["s", "w"], observed=True)["r"]
    means, sizes = by_sw.mean(), by_sw.size()
    noise = (frame["r"] - by_sw.transform("mean")).var() / sizes
    assert float(np.sqrt(max(means.var() - noise.mean(), 0))) == pytest.approx(0.3, rel=0.2)


def test_harder_analytic_truth_agrees_with_monte_carlo_counterfactual():
    small = simulate_survey(n_students=2000, n_schools=20, seed=11, params=HARDER)
    p = small.params
    targets = [
        (("gender", "school_type"), ("girl", "vwo"), "2020_2"),
        (("parent_edu", "school_type"), ("wo", "vmbo_bk"), "2014"),
        (("school_type",), ("vmbo_bk",), "2022"),
        ((), (), "2014"),
    ]
    truth = true_effects(small, breakdowns=tuple(sorted({b for b, _, _ in targets})))
    truth = truth.set_index(["breakdown", "group", "wave"])["value"]
    scaled = build_index(small.frame)
    rows = scaled.frame
    codes = {c: rows[c].cat.codes.to_numpy().astype("int64") for c in COVARIATES}
    age_term = p.age_slope * (rows["age"].to_numpy() - p.age_center)
    table = small.eta()
    reps = 100

    def mc_mean(substitute: dict[str, int]) -> float:
        rng = np.random.default_rng(123)
        idx = tuple(
            np.full(len(rows), substitute[c]) if c in substitute else codes[c] for c in COVARIATES
        )
        eta = np.tile(table[idx] + age_term, reps)
        student_sd = np.tile(p.student_sds()[idx[COVARIATES.index("school_type")]], reps)
        theta = eta + np.hypot(p.school_sd, p.school_wave_sd) * rng.standard_normal(eta.size)
        theta = theta + student_sd * rng.standard_normal(eta.size)
        return float(draw_items(theta, p, rng).mean())

    pooled = mc_mean({})
    for cols, levels, wave in targets:
        sub = {c: schema.Levels().of(c).index(lv) for c, lv in zip(cols, levels, strict=True)}
        sub["wave"] = schema.WAVES.index(wave)
        mc = (mc_mean(sub) - pooled) / scaled.raw_sd
        key = (schema.breakdown_name(cols), schema.group_label(levels), wave)
        assert mc == pytest.approx(truth[key], abs=0.01), key
    # the three-way cells move the cross breakdown's truth away from the two-way model's
    two_way = true_effects(
        simulate_survey(n_students=2000, n_schools=20, seed=11, params=SimulationParams()),
        breakdowns=(("gender", "school_type"),),
    ).set_index(["breakdown", "group", "wave"])["value"]
    key = ("gender x school_type", "girl:vwo", "2020_2")
    assert abs(truth[key] - two_way[key]) > 0.01


def test_random_truths_differ_by_seed_and_write_their_structure(tmp_path):
    a, b = random_truth(1), random_truth(2)
    assert a.harder and a.school_wave_sd != b.school_wave_sd
    assert random_truth(1).school_sd == a.school_sd  # same seed, same truth
    sim = simulate_survey(n_students=2000, n_schools=20, seed=1, params=a)
    write_simulation(sim, tmp_path / "hard.csv")
    structure = json.loads((tmp_path / "hard_truth_structure.json").read_text())
    assert structure["school_wave_sd"] == pytest.approx(a.school_wave_sd)
    cells = structure["three_way"]["wave x gender x school_type"]
    assert set(cells) == set(schema.WAVES) and set(cells["2014"]) == set(schema.GENDERS)
    write_simulation(simulate_survey(n_students=2000, n_schools=20), tmp_path / "p.csv")
    assert not (tmp_path / "p_truth_structure.json").exists()


def _surveyed_params(**changes) -> SimulationParams:
    return dataclasses.replace(SimulationParams(), school_sd=0.25, school_wave_sd=0.15, **changes)


def test_surveyed_truth_is_the_new_school_truth_without_school_variation():
    flat = dataclasses.replace(SimulationParams(), school_sd=0.0)
    small = simulate_survey(n_students=2000, n_schools=20, seed=4, params=flat)
    breakdowns = ((), ("gender",), ("region",))
    keys = ["breakdown", "group", "wave"]
    surveyed = true_surveyed_effects(small, breakdowns=breakdowns).set_index(keys)["value"]
    any_school = true_effects(small, breakdowns=breakdowns).set_index(keys)["value"]
    shared = surveyed.index
    assert np.allclose(surveyed, any_school.loc[shared], atol=1e-6)


def test_surveyed_truth_agrees_with_monte_carlo_over_the_schools_shares():
    small = simulate_survey(n_students=3000, n_schools=24, seed=9, params=_surveyed_params())
    p = small.params
    truth = true_surveyed_effects(small, breakdowns=((), ("region",)), min_cell_n=10)
    truth = truth.set_index(["breakdown", "group", "wave"])["value"]
    rows = build_index(small.frame).frame
    codes = {c: rows[c].cat.codes.to_numpy().astype("int64") for c in COVARIATES}
    age_term = p.age_slope * (rows["age"].to_numpy() - p.age_center)
    school = rows["school_id"].astype(str).map(dict(zip(small.school_ids, itertools.count())))
    school = school.to_numpy()
    counts = np.zeros(small.u_school_wave.shape)
    np.add.at(counts, (school, codes["wave"]), 1.0)
    counts[counts < 10] = 0
    region_of = np.array([codes["region"][school == s][0] for s in range(len(counts))])
    table, reps = eta_table(p), 60

    def mc_mean(wave: int, region: int | None) -> float:
        # every row with the wave (and region) set, paired with a school drawn by its share
        # of the students (of the region's schools): the estimand's definition, simulated
        rng = np.random.default_rng(5)
        share = counts.sum(axis=1) * (True if region is None else region_of == region)
        picks = rng.choice(len(share), size=len(rows) * reps, p=share / share.sum())
        sub = {"wave": wave} | ({} if region is None else {"region": region})
        idx = tuple(np.full(len(rows), sub[c]) if c in sub else codes[c] for c in COVARIATES)
        eta = np.tile(table[idx] + age_term, reps)
        theta = eta + small.u_school[picks] + small.u_school_wave[picks, wave]
        theta = theta + p.student_sd * rng.standard_normal(eta.size)
        return float(draw_items(theta, p, rng).mean())

    raw_sd = build_index(small.frame).raw_sd
    new_school = true_effects(small, breakdowns=((), ("region",)))
    new_school = new_school.set_index(["breakdown", "group", "wave"])["value"]
    for group, region in (("all", None), ("maastricht_heuvelland", 3)):
        breakdown = "overall" if region is None else "region"
        mc = (mc_mean(6, region) - mc_mean(0, region)) / raw_sd
        key, ref = (breakdown, group, "2022"), (breakdown, group, "2014")
        assert mc == pytest.approx(truth[key] - truth[ref], abs=0.005), group
    # and it is a different estimand: the region's schools drift away from a new school's
    assert abs(mc - (new_school[key] - new_school[ref])) > 0.01


def test_correlated_school_drift_keeps_its_sd():
    p = _surveyed_params(school_wave_rho=0.7)
    sim = simulate_survey(n_students=8000, n_schools=400, seed=2, params=p)
    u = sim.u_school_wave
    lag1 = np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]
    assert lag1 == pytest.approx(0.7, abs=0.05)
    assert u.std() == pytest.approx(0.15, rel=0.1)
    independent = simulate_survey(n_students=8000, n_schools=400, seed=2, params=_surveyed_params())
    lag1 = np.corrcoef(
        independent.u_school_wave[:, :-1].ravel(), independent.u_school_wave[:, 1:].ravel()
    )[0, 1]
    assert abs(lag1) < 0.05
    with pytest.raises(SpecError, match="school_wave_rho"):
        _surveyed_params(school_wave_rho=1.0)
    with pytest.raises(SpecError, match="school_wave_rho needs school_wave_sd"):
        SimulationParams(school_wave_rho=0.5)


def test_heavy_tailed_residual_truth_agrees_with_monte_carlo():
    p = dataclasses.replace(SimulationParams(), student_df=4.0, school_wave_sd=0.1)
    rng = np.random.default_rng(8)
    eta = np.array([-1.0, 0.0, 0.8])
    reps = 200_000
    for school in (True, False):
        theta = np.repeat(eta, reps)
        if school:
            theta = theta + np.sqrt(p.school_sd**2 + p.school_wave_sd**2) * rng.standard_normal(
                theta.size
            )
        theta = theta + rng.standard_t(4.0, theta.size) * np.sqrt(2 / 4)
        mc = draw_items(theta, p, rng).mean(axis=1).reshape(len(eta), reps).mean(axis=1)
        exact = expected_item_mean(eta, p, school=school)
        assert exact == pytest.approx(mc, abs=0.005)
    # heavier tails change the curve: the normal residual's truth differs
    normal = dataclasses.replace(p, student_df=0.0)
    assert (
        abs(expected_item_mean(np.array([1.5]), p) - expected_item_mean(np.array([1.5]), normal))[0]
        > 0.001
    )
    sim = simulate_survey(n_students=2000, n_schools=20, seed=3, params=p)
    assert sim.params.harder
    with pytest.raises(SpecError, match="student_df"):
        dataclasses.replace(p, student_df=1.5)
