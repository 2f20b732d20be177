"""Model specs: the readable TOML files under ``models/``, parsed and validated."""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from omlbayes.constants import DEFAULT_MODEL
from omlbayes.errors import SpecError
from omlbayes.model.priors import FAMILIES as PRIOR_DISTS
from omlbayes.model.priors import Prior
from omlbayes.resources import models_dir

# Every key a spec may hold, per section: anything else is an error naming the key and
# these (one table, so a new key is a one-line addition). None = any key (the [priors]
# table is keyed by term names).
ALLOWED_KEYS: dict[str, tuple[str, ...] | None] = {
    "": ("model", "priors", "estimands", "sampler", "report", "measurement"),
    "model": (
        "name",
        "description",
        "response",
        "family",
        "common",
        "group",
        "school_by_wave",
        "residual_sd_by",
    ),
    "priors": None,
    "estimands": ("breakdowns", "wave_contrasts"),
    "sampler": (
        "backend",
        "sampler",
        "draws",
        "tune",
        "chains",
        "kernel",
        "sd_parameterization",
        "early_stop",
        "importance",
    ),
    "report": ("findings",),
    "measurement": None,  # checked by _measurement (graded models only)
}

BACKENDS = ("collapsed", "bambi", "graded")
SAMPLERS = ("nutpie", "pymc", "numpyro")
# importance sampling (backends/importance.py) runs on this backend, with this NUTS behind it
IMPORTANCE_SAMPLER = ("collapsed", "nutpie")
KERNELS = ("auto", "dense", "sparse")  # the collapsed backend's linear algebra
# How the collapsed backend samples each group SD: on the log scale (the default, under which
# the validation studies ran), folded (tau = |w|), or folded where a term of many cells has
# its posterior against zero ("auto"; see backends/collapsed.py).
SD_PARAMETERIZATIONS = ("log", "auto", "folded")
FAMILIES = ("gaussian", "t", "bernoulli", "poisson", "negativebinomial", "cumulative", "graded")


@dataclass(frozen=True)
class SamplerSettings:
    backend: str = "collapsed"
    sampler: str = "nutpie"
    draws: int = 2000  # the most draws per chain (all of them without early_stop)
    tune: int = 300
    chains: int = 4
    kernel: str = "auto"
    sd_parameterization: str = "log"
    early_stop: bool = True  # keep the first K draws that pass the gate with a margin
    # collapsed backend: importance sampling from the split-t approximation first, NUTS
    # where its gate fails (backends/importance.py)
    importance: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A validated model spec. Group terms are tuples of columns (``("wave", "gender")``)."""

    name: str
    description: str
    response: str
    family: str
    common: tuple[str, ...]
    group: tuple[tuple[str, ...], ...]
    school_by_wave: bool
    priors: dict[str, Prior]  # keys: Intercept, common, group_sigma, sigma, or a term name
    breakdowns: tuple[tuple[str, ...], ...]
    wave_contrasts: tuple[tuple[str, str], ...]
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    source: str = ""
    findings: str = ""  # the findings file ([report] findings), resolved; "" = the generic one
    residual_sd_by: str | None = None  # one residual SD per level of this column
    measurement: dict = field(default_factory=dict)  # [measurement] of a graded model

    @property
    def group_terms(self) -> tuple[tuple[str, ...], ...]:
        """Group terms in effect, with the optional school x wave term."""
        extra = (("school_id", "wave"),) if self.school_by_wave else ()
        return self.group + extra

    @property
    def columns(self) -> tuple[str, ...]:
        """Every data column the model reads."""
        cols = [self.response, *(c for term in self.common for c in term.split(":"))]
        cols += [c for term in self.group_terms for c in term]
        if self.residual_sd_by is not None:
            cols.append(self.residual_sd_by)
        return tuple(dict.fromkeys(cols))

    def prior_for(self, name: str, kind: str) -> Prior:
        """The prior of a term: its own entry if given, else the default of its kind."""
        return self.priors.get(name, self.priors[kind])

    def formula(self) -> str:
        """The Bambi formula of this spec."""
        rhs = ["1", *self.common] + [f"(1|{group_term_name(t)})" for t in self.group_terms]
        return f"{self.response} ~ " + " + ".join(rhs)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> ModelSpec:
        """The spec a run record holds (``to_dict`` after a JSON round trip)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["common"] = tuple(values.get("common", ()))
        values["group"] = tuple(tuple(t) for t in values.get("group", ()))
        values["breakdowns"] = tuple(tuple(b) for b in values.get("breakdowns", ()))
        values["wave_contrasts"] = tuple(tuple(p) for p in values.get("wave_contrasts", ()))
        values["priors"] = {
            k: Prior(p["dist"], dict(p["params"])) for k, p in raw["priors"].items()
        }
        if "sampler" in raw:
            values["sampler"] = SamplerSettings(**raw["sampler"])
        return cls(**values)

    def sha256(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def with_sampler(self, **changes: object) -> ModelSpec:
        return replace(self, sampler=replace(self.sampler, **changes))


def group_term_name(columns: tuple[str, ...]) -> str:
    """``("wave", "gender")`` -> ``"wave:gender"`` (Bambi names the term ``1|wave:gender``)."""
    return ":".join(columns)


def parse_breakdown(text: str) -> tuple[str, ...]:
    """``"overall"`` -> ``()``; ``"gender x school_type"`` -> ``("gender", "school_type")``."""
    text = text.strip()
    return () if text == "overall" else tuple(p.strip() for p in text.split(" x "))


def _prior(raw: object, where: str) -> Prior:
    if not isinstance(raw, dict) or "dist" not in raw:
        raise SpecError(f"{where}: a prior needs a table like {{ dist = 'Normal', sigma = 1 }}")
    params = {k: v for k, v in raw.items() if k != "dist"}
    dist = raw["dist"]
    if dist not in PRIOR_DISTS:
        raise SpecError(f"{where}: unknown prior {dist!r}; use one of {', '.join(PRIOR_DISTS)}")
    if set(params) != set(PRIOR_DISTS[dist]):
        expected = ", ".join(PRIOR_DISTS[dist])
        raise SpecError(f"{where}: {dist} takes exactly {expected}; got {', '.join(params)}")
    if any(not isinstance(v, int | float) for v in params.values()):
        raise SpecError(f"{where}: prior parameters must be numbers")
    return Prior(dist, {k: float(v) for k, v in params.items()})


def load_spec(path: Path | str | None = None) -> ModelSpec:
    """Read and validate a model spec; a bare name looks in ``models/``, ``None`` gives
    :data:`DEFAULT_MODEL`."""
    if path is None:
        path = models_dir() / f"{DEFAULT_MODEL}.toml"
    path = Path(path)
    if not path.suffix and not path.exists():
        path = models_dir() / f"{path.name}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(models_dir().glob("*.toml")))
        raise SpecError(f"{path}: no such model spec; known models: {known}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML ({err}); fix the file") from None
    check_keys(raw, path)
    try:
        model, priors_raw = raw["model"], raw["priors"]
    except KeyError as err:
        raise SpecError(f"{path}: missing section [{err.args[0]}]") from None
    for key in ("name", "response", "family", "common", "group"):
        if key not in model:
            raise SpecError(f"{path}: [model] needs '{key}'")
    family = model["family"]
    if family not in FAMILIES:
        raise SpecError(f"{path}: family {family!r} unknown; use one of {', '.join(FAMILIES)}")
    priors = {name: _prior(value, f"{path} [priors] {name}") for name, value in priors_raw.items()}
    for kind in ("Intercept", "common", "group_sigma", "sigma"):
        if kind not in priors:
            raise SpecError(f"{path}: [priors] needs '{kind}'")
    estimands = raw.get("estimands", {})
    sampler = SamplerSettings(**raw.get("sampler", {}))
    findings = raw.get("report", {}).get("findings", "")
    if findings:
        findings_path = (path.parent / str(findings)).resolve()
        if not findings_path.is_file():
            raise SpecError(
                f"{path}: [report] findings = {findings!r}: no such file next to the spec"
            )
        findings = str(findings_path)
    spec = ModelSpec(
        name=str(model["name"]),
        description=str(model.get("description", "")),
        response=str(model["response"]),
        family=family,
        common=tuple(model["common"]),
        group=tuple(tuple(t.split(":")) for t in model["group"]),
        school_by_wave=bool(model.get("school_by_wave", False)),
        priors=priors,
        breakdowns=tuple(parse_breakdown(b) for b in estimands.get("breakdowns", ["overall"])),
        wave_contrasts=tuple((str(a), str(b)) for a, b in estimands.get("wave_contrasts", [])),
        sampler=sampler,
        source=str(path),
        findings=findings,
        residual_sd_by=_residual_sd_by(model, path),
        measurement=_measurement(raw.get("measurement"), family, path),
    )
    check_sampler(spec.sampler)
    return spec


def check_keys(raw: dict, path: Path | str) -> None:
    """One line naming the first unknown key of any section and the keys allowed there."""
    for section, allowed in ALLOWED_KEYS.items():
        table = raw if not section else raw.get(section, {})
        where = "the top level" if not section else f"[{section}]"
        if not isinstance(table, dict):
            raise SpecError(f"{path}: {where} must be a table")
        if allowed is None:
            continue
        unknown = [k for k in table if k not in allowed]
        if unknown:
            raise SpecError(
                f"{path}: {where} has unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}"
            )


def _residual_sd_by(model: dict, path: Path) -> str | None:
    """``[model] residual_sd_by = "column"``: one residual SD per level of that column."""
    value = model.get("residual_sd_by")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SpecError(f"{path}: [model] residual_sd_by must be a column name")
    if model.get("family", "gaussian") == "graded":
        raise SpecError(
            f"{path}: the graded model cannot fit residual_sd_by (its latent residual SD is "
            "fixed at 1 to set the latent scale); drop the key (models/graded_full.toml has "
            "the default's other terms)"
        )
    if model.get("family", "gaussian") != "gaussian":
        raise SpecError(f"{path}: residual_sd_by needs family = 'gaussian'")
    return value


MEASUREMENT_KEYS = {
    "items": list,
    "link": str,
    "cutpoint_sigma": float,
    "gap_log_sigma": float,
    "loading_log_sigma": float,
}


def _measurement(raw: object, family: str, path: Path) -> dict:
    """The ``[measurement]`` section: required by (and only allowed for) family "graded"."""
    if family != "graded":
        if raw is not None:
            raise SpecError(f"{path}: [measurement] belongs to family 'graded' models only")
        return {}
    if not isinstance(raw, dict) or "items" not in raw:
        raise SpecError(f"{path}: a graded model needs [measurement] with items = [...]")
    unknown = set(raw) - set(MEASUREMENT_KEYS)
    if unknown:
        allowed = ", ".join(MEASUREMENT_KEYS)
        raise SpecError(
            f"{path}: [measurement] has unknown keys {', '.join(sorted(unknown))}; "
            f"allowed: {allowed}"
        )
    out = dict(raw)
    items = out["items"]
    if not isinstance(items, list) or len(items) < 2 or not all(isinstance(i, str) for i in items):
        raise SpecError(f"{path}: [measurement] items must list at least two item columns")
    if out.get("link", "probit") != "probit":
        raise SpecError(f"{path}: [measurement] link must be 'probit' (the only one implemented)")
    for key in ("cutpoint_sigma", "gap_log_sigma", "loading_log_sigma"):
        if key in out and (not isinstance(out[key], int | float) or not out[key] > 0):
            raise SpecError(f"{path}: [measurement] {key} must be a positive number")
    return out


def check_sampler(settings: SamplerSettings) -> None:
    """Raise on settings no backend can honour (never silently ignore them)."""
    if settings.backend not in BACKENDS:
        raise SpecError(f"backend {settings.backend!r} unknown; use one of {', '.join(BACKENDS)}")
    if settings.sampler not in SAMPLERS:
        raise SpecError(f"sampler {settings.sampler!r} unknown; use one of {', '.join(SAMPLERS)}")
    if settings.kernel not in KERNELS:
        raise SpecError(f"kernel {settings.kernel!r} unknown; use one of {', '.join(KERNELS)}")
    if settings.sd_parameterization not in SD_PARAMETERIZATIONS:
        raise SpecError(
            f"sd_parameterization {settings.sd_parameterization!r} unknown; use one of "
            f"{', '.join(SD_PARAMETERIZATIONS)}"
        )
    for name in ("early_stop", "importance"):
        value = getattr(settings, name)
        if not isinstance(value, bool):
            raise SpecError(f"{name} must be true or false, got {value!r}")
    if settings.importance and (settings.backend, settings.sampler) != IMPORTANCE_SAMPLER:
        raise SpecError(
            "importance sampling runs on the collapsed backend with nutpie as its fall-back; "
            f"got backend {settings.backend!r}, sampler {settings.sampler!r}: pass --no-importance"
        )
    for name in ("draws", "tune", "chains"):
        value = getattr(settings, name)
        if not isinstance(value, int) or value < 1:
            raise SpecError(f"{name} must be a positive whole number, got {value!r}")
