"""Display names in Dutch (nl) and English (en), kept apart from the data."""

from __future__ import annotations

from omlbayes.errors import SpecError

LANGS = ("nl", "en")

ITEM_TEXT = {
    "nl": {
        "item_1": "Leraren weten meestal hoe ik me voel",
        "item_2": "Ik kan met mijn leraren over problemen praten",
        "item_3": "Als ik me ongelukkig voel, kan ik daar met leraren over praten",
        "item_4": "Ik voel me op mijn gemak bij de leraren",
        "item_5": "De leraren begrijpen me",
        "item_6": "Ik heb goed contact met mijn leraren",
    },
    "en": {
        "item_1": "Teachers usually know how I feel",
        "item_2": "I can talk to my teachers about problems",
        "item_3": "When I feel unhappy I can talk to teachers about it",
        "item_4": "I feel at ease with the teachers",
        "item_5": "The teachers understand me",
        "item_6": "I have good contact with my teachers",
    },
}

ANSWER_TEXT = {
    "nl": {
        1: "helemaal mee oneens",
        2: "mee oneens",
        3: "neutraal",
        4: "mee eens",
        5: "helemaal mee eens",
    },
    "en": {
        1: "strongly disagree",
        2: "disagree",
        3: "neutral",
        4: "agree",
        5: "strongly agree",
    },
}

COLUMN_TEXT = {
    "nl": {
        "overall": "Totaal",
        "wave": "Meting",
        "gender": "Geslacht",
        "school_type": "Schooltype",
        "parent_edu": "Opleiding ouders",
        "region": "Regio",
        "age": "Leeftijd",
        "school_id": "School",
    },
    "en": {
        "overall": "Overall",
        "wave": "Wave",
        "gender": "Gender",
        "school_type": "School type",
        "parent_edu": "Parental education",
        "region": "Region",
        "age": "Age",
        "school_id": "School",
    },
}

LEVEL_TEXT = {
    "nl": {
        "all": "Alle leerlingen",
        "boy": "jongens",
        "girl": "meisjes",
        "vmbo_bk": "vmbo b/k",
        "vmbo_gt": "vmbo g/t",
        "havo": "havo",
        "vwo": "vwo",
        "max_mbo": "max. mbo",
        "hbo": "hbo",
        "wo": "wo",
        "unknown": "onbekend",
        "noord_limburg": "Noord-Limburg",
        "midden_limburg": "Midden-Limburg",
        "sittard_geleen": "Sittard-Geleen",
        "maastricht_heuvelland": "Maastricht-Heuvelland",
        "parkstad_limburg": "Parkstad Limburg",
        "2020_0": "2020 voor sluiting",
        "2020_1": "2020 na sluiting",
        "2020_2": "2020 na zomer",
    },
    "en": {
        "all": "All students",
        "boy": "boys",
        "girl": "girls",
        "vmbo_bk": "vmbo b/k",
        "vmbo_gt": "vmbo g/t",
        "havo": "havo",
        "vwo": "vwo",
        "max_mbo": "at most mbo",
        "hbo": "hbo",
        "wo": "wo (university)",
        "unknown": "unknown",
        "noord_limburg": "Noord-Limburg",
        "midden_limburg": "Midden-Limburg",
        "sittard_geleen": "Sittard-Geleen",
        "maastricht_heuvelland": "Maastricht-Heuvelland",
        "parkstad_limburg": "Parkstad Limburg",
        "2020_0": "2020 before closure",
        "2020_1": "2020 after closure",
        "2020_2": "2020 after summer",
    },
}


def check_lang(lang: str) -> str:
    if lang not in LANGS:
        raise SpecError(f"unknown language {lang!r}; use one of {', '.join(LANGS)}")
    return lang


def level(value: str, lang: str) -> str:
    """Display name of a category level (a cross cell ``a:b`` joins its parts)."""
    table = LEVEL_TEXT[check_lang(lang)]
    return " / ".join(table.get(part, part) for part in str(value).split(":"))


def column(name: str, lang: str) -> str:
    """Display name of a column or a cross breakdown ``a x b``."""
    table = COLUMN_TEXT[check_lang(lang)]
    return " × ".join(table.get(part, part) for part in name.split(" x "))


# --- figure texts (plots/*) ---

INDEX_TEXT = {
    "nl": "Sociale relaties met leraren",
    "en": "Social relations with teachers",
}

SD_UNITS_TEXT = {"nl": "SD-eenheden", "en": "SD units"}

COVID_BAND_TEXT = {"nl": "2020 (covid)", "en": "2020 (covid)"}

WAVE_ALL_TEXT = {"nl": "alle metingen", "en": "all waves"}

FOREST_CAPTION = {
    "nl": (
        "Ruit = afwijking van het gemiddelde over alle scholen en jaren, gecorrigeerd voor "
        "schooltype, geslacht, leeftijd, opleiding ouders en regio; "
        "lijn = 95%-interval (posterior)"
    ),
    "en": (
        "Diamond = deviation from the mean over all schools and years, adjusted for "
        "school type, gender, age, parental education and region; "
        "line = 95% interval (posterior)"
    ),
}

SUPPRESSED_TEXT = {"nl": "n < {n}", "en": "n < {n}"}

ITEM_FIGURE_TITLE = {
    "nl": "Antwoorden op de zes stellingen over leraren",
    "en": "Answers to the six statements about teachers",
}

PERCENT_TEXT = {"nl": "% van de leerlingen", "en": "% of students"}

PPC_TEXT = {
    "nl": {
        "title": "Posterior predictive check: verdeling van de index",
        "prior_title": "Prior predictive check: verdeling van de index",
        "xlabel": "index (SD-eenheden)",
        "ylabel": "dichtheid",
        "observed": "waargenomen",
        "replicated": "gesimuleerd (posterior)",
        "prior": "gesimuleerd (prior)",
        "draws": "{k} trekkingen",
    },
    "en": {
        "title": "Posterior predictive check: distribution of the index",
        "prior_title": "Prior predictive check: distribution of the index",
        "xlabel": "index (SD units)",
        "ylabel": "density",
        "observed": "observed",
        "replicated": "replicated (posterior)",
        "prior": "simulated (prior)",
        "draws": "{k} draws",
    },
}
