"""Every figure function on fake tables and a fake DataTree (no sampling)."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import arviz_base as azb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from omlbayes import labels
from omlbayes.data import schema  # noqa: E402
from omlbayes.errors import SpecError  # noqa: E402
from omlbayes.plots.diagnostics import (  # noqa: E402
    plot_energy,
    plot_ppc_index,
    plot_prior_predictive,
    plot_rank_hyper,
)
from omlbayes.plots.forest import figure_specs, plot_forest, write_forest_figures  # noqa: E402
from omlbayes.plots.items import plot_item_distribution  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HYPER = ("sigma", "1|school_sigma", "1|wave:gender_sigma")


def fake_effects(*, cross_waves: tuple[str, ...] = ("all",), seed: int = 5) -> pd.DataFrame:
    """Effects for every wave and group of every factsheet breakdown (crosses pooled)."""
    rng = np.random.default_rng(seed)
    levels = schema.Levels()
    records = []

    def add(breakdown: str, group: str, wave: str) -> None:
        mean, half = rng.uniform(-0.3, 0.3), rng.uniform(0.05, 0.2)
        records.append(
            {
                "breakdown": breakdown,
                "group": group,
                "wave": wave,
                "mean": mean,
                "lower": mean - half,
                "upper": mean + half,
                "n": int(rng.integers(20, 3000)),
            }
        )

    for wave in schema.WAVES:
        add("overall", "all", wave)
    for columns in schema.SUBGROUP_BREAKDOWNS:
        waves = cross_waves if len(columns) == 2 else schema.WAVES
        for cell in itertools.product(*(levels.of(c) for c in columns)):
            for wave in waves:
                add(schema.breakdown_name(columns), schema.group_label(cell), wave)
    return pd.DataFrame.from_records(records)


@pytest.fixture(scope="module")
def effects() -> pd.DataFrame:
    return fake_effects()


@pytest.fixture(scope="module")
def posterior():
    rng = np.random.default_rng(0)
    chains, draws = 2, 100
    return azb.from_dict(
        {
            "posterior": {name: np.abs(rng.normal(0.3, 0.05, (chains, draws))) for name in HYPER},
            "sample_stats": {
                "energy": rng.normal(50, 3, (chains, draws)),
                "diverging": np.zeros((chains, draws), dtype=bool),
            },
        }
    )


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000


def figure_texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def rows_top_to_bottom(ax) -> list[str]:
    """Y tick labels sorted by their position on screen, top first."""
    ticks = ax.get_yticks()
    names = [t.get_text() for t in ax.get_yticklabels()]
    screen_y = ax.transData.transform(np.column_stack([np.zeros_like(ticks), ticks]))[:, 1]
    return [name for _, name in sorted(zip(screen_y, names, strict=True), reverse=True)]


def item_table() -> pd.DataFrame:
    shares = np.array([[10, 23, 35, 23, 9], [8, 26, 34, 24, 8]] * 3, dtype=float)
    table = pd.DataFrame(shares, columns=[f"pct_{a}" for a in range(1, 6)])
    table.insert(0, "item", [f"item_{k}" for k in range(1, 7)])
    return table


@pytest.mark.parametrize("lang", labels.LANGS)
def test_item_distribution_figure(tmp_path, lang):
    fig = plot_item_distribution(item_table(), lang=lang)
    assert isinstance(fig, Figure)
    texts = figure_texts(fig)
    assert labels.ITEM_TEXT[lang]["item_4"].split()[0] in " ".join(texts)
    assert labels.ANSWER_TEXT[lang][5] in texts
    path = tmp_path / "fig1.png"
    fig.savefig(path)
    assert_png(path)


def test_item_distribution_is_centred_on_neutral():
    fig = plot_item_distribution(item_table(), lang="en")
    neutral = fig.axes[0].containers[2]  # bars in answer order 1..5
    for bar in neutral:
        assert bar.get_x() + bar.get_width() / 2 == pytest.approx(0.0)


def test_forest_rows_follow_wave_order(effects):
    fig = plot_forest(effects, breakdown="overall", lang="en")
    expected = [labels.level(w, "en") for w in schema.WAVES]
    assert rows_top_to_bottom(fig.axes[0]) == expected

    custom = ("2022", "2020_2", "2014")
    fig = plot_forest(effects, breakdown="gender", lang="nl", waves=custom)
    assert rows_top_to_bottom(fig.axes[0]) == [labels.level(w, "nl") for w in custom]


def test_forest_single_breakdown_has_one_panel_per_group(effects):
    fig = plot_forest(effects, breakdown="region", lang="en")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles == [labels.level(r, "en") for r in schema.REGIONS]
    assert labels.COVID_BAND_TEXT["en"] in figure_texts(fig)


@pytest.mark.parametrize("lang", labels.LANGS)
def test_forest_labels_switch_with_language(effects, lang):
    fig = plot_forest(effects, breakdown="parent_edu", lang=lang)
    texts = figure_texts(fig)
    assert labels.FOREST_CAPTION[lang][:20] in " ".join(texts)
    assert labels.SD_UNITS_TEXT[lang] in texts
    assert labels.level("2020_1", lang) in texts
    assert labels.level("unknown", lang) in texts


def test_forest_cross_pooled_and_per_wave(effects):
    fig = plot_forest(effects, breakdown="gender x school_type", lang="en")
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == [labels.level(s, "en") for s in schema.SCHOOL_TYPES]
    assert rows_top_to_bottom(panels[0]) == [labels.level(g, "en") for g in schema.GENDERS]

    per_wave = fake_effects(cross_waves=schema.WAVES)
    fig = plot_forest(per_wave, breakdown="parent_edu x region", lang="nl")
    texts = figure_texts(fig)
    assert labels.level("wo", "nl") in texts  # legend of the coloured first factor
    assert labels.COVID_BAND_TEXT["nl"] in texts


def test_forest_unknown_breakdown_raises(effects):
    with pytest.raises(SpecError, match="shoe_size"):
        plot_forest(effects, breakdown="shoe_size", lang="en")
    with pytest.raises(SpecError, match="no rows"):
        plot_forest(effects, breakdown="gender x region", lang="en")
    with pytest.raises(SpecError, match="language"):
        plot_forest(effects, breakdown="overall", lang="de")
    with pytest.raises(SpecError, match="2019"):
        plot_forest(effects, breakdown="overall", lang="en", waves=("2014", "2019"))
    with pytest.raises(SpecError):
        figure_specs(["overall", "gender x shoe_size"])


def test_figure_specs_names():
    specs = figure_specs(["gender x school_type", "region", "overall", "school_type"])
    assert [s.filename for s in specs] == [
        "fig2_wave.png",
        "fig3_school_type.png",
        "fig6_region.png",
        "fig_cross_gender_x_school_type.png",
    ]


def test_write_forest_figures(tmp_path, effects):
    paths = write_forest_figures(effects, tmp_path / "figures", lang="en")
    names = [p.name for p in paths]
    assert names[:5] == [
        "fig2_wave.png",
        "fig3_school_type.png",
        "fig4_gender.png",
        "fig5_parent_edu.png",
        "fig6_region.png",
    ]
    assert "fig_cross_parent_edu_x_region.png" in names
    assert len(paths) == 1 + len(schema.SUBGROUP_BREAKDOWNS)
    for path in paths:
        assert_png(path)


def test_rank_and_energy_plots(tmp_path, posterior):
    assert_png(plot_rank_hyper(posterior, HYPER, tmp_path / "rank.png"))
    assert_png(plot_energy(posterior, tmp_path / "energy.png"))
    with pytest.raises(SpecError, match="nope"):
        plot_rank_hyper(posterior, ["nope"], tmp_path / "x.png")


@pytest.mark.parametrize("lang", labels.LANGS)
def test_predictive_checks(tmp_path, lang):
    rng = np.random.default_rng(1)
    observed = rng.normal(0, 1, 300)
    assert_png(
        plot_ppc_index(observed, rng.normal(0, 1, (80, 300)), tmp_path / "ppc.png", lang=lang)
    )
    prior = rng.normal(0, 3, (30, 300))
    assert_png(plot_prior_predictive(prior, observed, tmp_path / "prior.png", lang=lang))
    with pytest.raises(SpecError):
        plot_ppc_index(observed, observed, tmp_path / "bad.png", lang=lang)
