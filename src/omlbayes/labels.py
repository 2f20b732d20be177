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
        "lijn = {interval} (posterior); {suppressed}: minder dan {n} leerlingen, niet getoond"
    ),
    "en": (
        "Diamond = deviation from the mean over all schools and years, adjusted for "
        "school type, gender, age, parental education and region; "
        "line = {interval} (posterior); {suppressed}: fewer than {n} students, not shown"
    ),
}

SUPPRESSED_TEXT = {"nl": "n < {n}", "en": "n < {n}"}

# Interval names, formatted with the run's probability (options.OutputOptions).
INTERVAL_TEXT = {
    "nl": {
        "eti": "{prob}%-interval (equal-tailed, ETI)",
        "hdi": "{prob}%-interval (hoogste posteriordichtheid, HDI)",
        "short": "{prob}%-interval",
    },
    "en": {
        "eti": "{prob}% interval (equal-tailed, ETI)",
        "hdi": "{prob}% interval (highest posterior density, HDI)",
        "short": "{prob}% interval",
    },
}

# What the line of a forest marker shows.
LINE_IS_TEXT = {"nl": "lijn = {interval}", "en": "line = {interval}"}

# All schools together: the monitor's area when the config names one.
AREA_TEXT = {
    "nl": {"area": "heel {area}", "none": "alle scholen samen", "none_short": "Alle scholen"},
    "en": {"area": "all of {area}", "none": "all schools together", "none_short": "All schools"},
}

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


# --- report texts (report.py, schools.py) ---

DIRECTION_TEXT = {
    "nl": {
        "very_likely_higher": "zeer waarschijnlijk hoger",
        "very_likely_lower": "zeer waarschijnlijk lager",
        "probably_higher": "waarschijnlijk hoger",
        "probably_lower": "waarschijnlijk lager",
        "no_clear_difference": "geen duidelijk verschil",
    },
    "en": {
        "very_likely_higher": "very likely higher",
        "very_likely_lower": "very likely lower",
        "probably_higher": "probably higher",
        "probably_lower": "probably lower",
        "no_clear_difference": "no clear difference",
    },
}

REPORT_TEXT = {
    "nl": {
        "title": "Belang van sociale relaties op school: relaties met leraren, {years}",
        "subtitle": (
            "Bayesiaanse heranalyse van {source}. "
            "Alle cijfers in dit rapport komen uit de run-map {run}."
        ),
        "source_monitor": "de enquête van de {monitor}",
        "source_none": "een schoolmonitor-enquête",
        "banner_failed": "LET OP: DE DIAGNOSTIEK VAN DE SAMPLER IS NIET GESLAAGD",
        "banner_failed_body": (
            "Niet geslaagd: {failed}. De posterior is mogelijk niet betrouwbaar; gebruik de "
            "cijfers en bevindingen in dit rapport niet voordat het model opnieuw is geschat "
            "met meer trekkingen of een aangepast model."
        ),
        "banner_passed": "Diagnostiek van de sampler geslaagd",
        "toc": "Inhoud",
        "measurement": "1. De meting",
        "measurement_intro": (
            "Leerlingen gaven bij zes stellingen aan in hoeverre ze het ermee eens zijn "
            "(1 = helemaal mee oneens ... 5 = helemaal mee eens). De zes antwoorden vormen "
            "samen de index 'sociale relaties met leraren' (gemiddelde van de beantwoorde "
            "stellingen, minstens {min_items} van de 6), gestandaardiseerd naar gemiddelde 0 en "
            "SD 1 over alle leerlingen, jaren en schooltypen. Het gemiddelde van de "
            "oorspronkelijke antwoorden is {raw_mean} (SD {raw_sd})."
        ),
        "item": "Stelling",
        "item_mean": "Gemiddelde",
        "item_agree": "% (helemaal) mee eens",
        "item_neutral": "% neutraal",
        "item_total": "Item-totaal r",
        "reliability": "Betrouwbaarheid per meting",
        "wave": "Meting",
        "n_complete": "n (volledig)",
        "alpha": "Cronbachs alfa",
        "omega": "McDonalds omega",
        "composition": "2. Samenstelling van de steekproef (tabel 1)",
        "composition_intro": "Percentages per meting en over alle metingen.",
        "variable": "Kenmerk",
        "level": "Categorie",
        "all_waves": "Alle metingen",
        "figures": "3. Figuren",
        "figures_intro": (
            "Ruit = afwijking van het gemiddelde over alle scholen en jaren (in SD-eenheden), "
            "gecorrigeerd voor schooltype, geslacht, leeftijd, opleiding ouders en regio en "
            "voor verschillen in samenstelling tussen cohorten; lijn = {interval}. Cellen met "
            "minder dan {min_cell_n} leerlingen worden niet getoond (n < {min_cell_n})."
        ),
        "fig1": "Figuur 1. Antwoorden op de zes stellingen, {years}",
        "fig2": "Figuur 2. Index per meting",
        "fig3": "Figuur 3. Index per meting en schooltype",
        "fig4": "Figuur 4. Index per meting en geslacht",
        "fig5": "Figuur 5. Index per meting en opleiding ouders",
        "fig6": "Figuur 6. Index per meting en regio",
        "fig_cross": "Figuur niet in de factsheet: {what}",
        "fig_extra": "Figuur: {what}",
        "results": "4. Resultaten in het kort",
        "results_intro": (
            "Elke zin hieronder is berekend uit de posterior (contrasts.csv en effects.csv): "
            "de richting, de grootte in SD-eenheden, het {interval} en de kans op de richting "
            "(probability of direction). 'Zeer waarschijnlijk' = kans op de richting minstens "
            "{very_likely}; 'waarschijnlijk' = minstens {likely}; anders 'geen duidelijk "
            "verschil'."
        ),
        "results_factsheet": "Grijs: wat de factsheet zelf vond, ter vergelijking.",
        "results_skipped": "Niet in deze run (de gegevens hebben die metingen niet): {pairs}.",
        "model_implied": (
            "Niet als bevinding gerapporteerd: de ontwikkeling over de metingen binnen de "
            "kruisingen {crosses}. De gegevens onderscheiden die trends niet van de "
            "tweewegtermen (geen eigen term meting x beide kenmerken, of een eigen term die "
            "minder dan 10% van de onzekerheid draagt en nul niet uitsluit); ze zijn dus "
            "door het model opgelegd en niet door de gegevens getoond "
            "(contrasts.csv: model_implied)."
        ),
        "extrapolated": (
            "Geëxtrapoleerd: {cells}. Deze gecorrigeerde gemiddelden plaatsen leerlingen in "
            "combinaties van kenmerken waarin geen enkele leerling is waargenomen (bijv. een "
            "schooltype in een regio zonder zulke scholen); daar rust de schatting op de "
            "priorverdeling van het model (effects.csv: extrapolated, empty_cell_share)."
        ),
        "estimands_title": "Welke vraag de cijfers beantwoorden",
        "estimands_text": (
            "De gecorrigeerde gemiddelden in dit rapport gelden voor een school uit het gebied "
            "zoals elke andere (de schooleffecten op hun gemiddelde) en voor één vaste "
            "samenstelling van leerlingen (alle metingen samen): zo verschuift een verschil "
            "tussen metingen niet door een andere mix van scholen of leerlingen. Wie vraagt "
            "naar de eigen scholen van de monitor, behoudt voor elke leerling de school en de "
            "afwijking van die school in die meting; wie de trend zoals waargenomen wil, "
            "neemt per meting de eigen samenstelling. De tabel geeft de veranderingen van het "
            "gemiddelde van alle leerlingen onder alle drie, met het {interval}; de API en de "
            "verkenner geven ze voor elke groep."
        ),
        "estimands_change": "Verandering",
        "estimand_any_pooled": "Een school zoals elke andere, vaste samenstelling (dit rapport)",
        "estimand_surveyed_pooled": "De gemeten scholen, vaste samenstelling",
        "estimand_any_wave": "Zoals waargenomen: samenstelling van elke meting",
        "estimands_differ": (
            "De drie lopen tot {largest} SD-eenheden uiteen: kies de vraag die bij het gebruik "
            "past (docs/api.md)."
        ),
        "estimands_agree": (
            "De drie verschillen hooguit {largest} SD-eenheden: hier maakt de keuze weinig uit."
        ),
        "factsheet_said": "Factsheet: ",
        "explorer": "5. Verkenner: verandering tussen metingen",
        "explorer_intro": (
            "Kies een indeling, een groep en twee metingen: de pagina berekent hoeveel die "
            "groep veranderde tussen de twee metingen (in SD-eenheden) en, als u een tweede "
            "groep kiest, hoeveel die verandering verschilt van die van de tweede groep. De "
            "berekening gebruikt {draws} gezamenlijke trekkingen uit de posterior die in dit "
            "bestand zijn opgeslagen (offline, zonder server); het {interval} en P(> 0) komen "
            "uit die trekkingen en kunnen daardoor iets afwijken van de tabellen "
            "(Monte-Carlofout). Cellen met minder dan {min_cell_n} leerlingen zijn niet "
            "opgenomen."
        ),
        "explorer_breakdown": "Indeling",
        "explorer_group_a": "Groep A",
        "explorer_group_b": "Vergeleken met groep B",
        "explorer_none": "(geen)",
        "explorer_wave_from": "Van meting",
        "explorer_wave_to": "Naar meting",
        "explorer_sentence": (
            "{subject}, {comparison}: {phrase} ({mean} SD; {interval} {lower} tot {upper}; "
            "P(> 0) = {p_positive})."
        ),
        "explorer_interval": "{prob}%-interval ({kind})",
        "explorer_axis": "verandering (SD-eenheden)",
        "explorer_legend": (
            "Staafjes: de {draws} trekkingen van de verandering; donker: binnen het "
            "{interval}; punt en lijn: gemiddelde en interval; stippellijn: geen verandering."
        ),
        "explorer_noscript": (
            "De verkenner heeft JavaScript nodig; de figuren en zinnen hierboven staan er ook "
            "zonder."
        ),
        "methods": "6. Verantwoording",
        "data": "Gegevens en uitsluitingen",
        "source": "Bestand",
        "sha256": "SHA-256 van het bestand",
        "column_map": "Kolomtoewijzing",
        "n_read": "Rijen gelezen",
        "n_analysed": "Leerlingen geanalyseerd",
        "excluded": "Uitgesloten: {reason}",
        "no_exclusions": "Geen rijen uitgesloten.",
        "notes": "Opmerkingen bij het inlezen",
        "model": "Model",
        "formula": "Formule",
        "model_text": (
            "Eén gezamenlijk multilevelmodel (normale verdeling op de gestandaardiseerde "
            "index): vaste effecten voor meting, geslacht, schooltype, opleiding ouders, regio "
            "en leeftijd; gedeeltelijk gepoolde afwijkingen per meting x subgroep en voor de "
            "kruisingen; een intercept per school (scholen binnen regio's). De ruiten zijn "
            "g-computatie-gemiddelden: de verwachte index met iedere leerling op de gegeven "
            "meting en groep gezet en de overige kenmerken zoals in de gepoolde steekproef, "
            "voor een gemiddelde school, min het gepoolde gemiddelde."
        ),
        "model_school_by_wave": (
            "Elke school heeft daarnaast een eigen afwijking per meting (school x meting): de "
            "trend van een school is die van de school zelf."
        ),
        "model_residual_by": "De residuele SD verschilt per {column} (één per niveau).",
        "model_three_way": (
            "Daarnaast heeft elke kruising een eigen afwijking per meting ({crosses}): de trend "
            "van een kruising wordt zelf geschat, niet afgeleid uit de tweewegtermen."
        ),
        "model_text_graded": (
            "Een meetmodel (graded response, {link}-link): elk antwoord op de {n_items} "
            "stellingen ({items}) is een geordende categorie van een latente relatie-eigenschap "
            "van de leerling, met per stelling eigen drempels en een eigen lading. Die latente "
            "eigenschap heeft de structuur van het hoofdmodel: vaste effecten voor meting, "
            "geslacht, schooltype, opleiding ouders, regio en leeftijd; gedeeltelijk gepoolde "
            "afwijkingen per meting x subgroep en voor de kruisingen; een intercept per school "
            "(scholen binnen regio's); de restvariantie vastgezet op 1. Alle effecten staan in "
            "SD-eenheden van de latente eigenschap over alle geanalyseerde leerlingen (per "
            "trekking: de SD van hun latente waarden), de latente tegenhanger van de "
            "gestandaardiseerde index; de ruiten zijn g-computatie-gemiddelden op die schaal, "
            "min het gepoolde gemiddelde. Ontbrekende antwoorden tellen niet mee (geen imputatie)."
        ),
        "priors": "Priors",
        "prior_term": "Parameter",
        "prior_dist": "Prior",
        "sampler": "Sampler",
        "sampler_text": (
            "{backend}-schatter, sampler {sampler}: {chains} ketens x ({tune} opwarm- + "
            "{draws} bewaarde trekkingen), seed {seed}."
        ),
        "sampler_early": (
            "De steekproef stopte bij het eerste controlepunt waarvan de trekkingen de "
            "poort met marge doorstonden: {kept} van ten hoogste {most} trekkingen per keten."
        ),
        "sampler_importance": (
            "{backend}-schatter: de variantieparameters met importance sampling uit een "
            "benadering bij de modus (de afgetaste dichtheid per parameter, verbonden door een "
            "Student-t-copula; {proposals} voorstellen, Pareto k "
            "{k} (grens {k_max})), per keten hertrokken uit de eigen voorstellen: {chains} "
            "ketens x {draws} trekkingen; de ESS telt voorstellen, geen trekkingen. Seed {seed}."
        ),
        "sampler_importance_failed": (
            "Importance sampling werd geprobeerd en voldeed niet ({reason}); daarom NUTS."
        ),
        "sampler_folded": (
            "Gevouwen bemonsterd (tau = |w|; sd_parameterization = {setting}): de SD van {terms}."
        ),
        "diagnostics": "Diagnostiek",
        "check": "Controle",
        "value": "Waarde",
        "verdict": "Oordeel",
        "passed": "geslaagd",
        "failed": "NIET geslaagd",
        "not_applicable": "niet van toepassing (geen Hamiltoniaanse sampler)",
        "prior_predictive": (
            "Controle van de priors (prior predictive): uit de priors alleen gesimuleerd zou "
            "de index een SD van {sd} hebben (90% tussen {lo} en {hi}), tegen {observed} "
            "waargenomen; {share}% van de simulaties ligt binnen de helft tot het dubbele "
            "daarvan. De posterior volgt hier de gegevens (zie de gevoeligheid voor de "
            "priors, prior_sensitivity.csv)."
        ),
        "gate_sees": (
            "Wat de controles wel en niet zien. De controles van de sampler (R-hat, ESS, "
            "divergenties, E-BFMI) zeggen of de trekkingen de posterior van dit model goed "
            "weergeven, niet of het model klopt. De voorspellende controles vergelijken de "
            "gegevens met nabootsingen uit het geschatte model: gemiddelde en SD per meting en "
            "groep, schoolgemiddelden per meting, de residuele SD per schooltype en de "
            "spreiding van celgemiddelden (school x meting, de kruisingen). Ze gebruiken de "
            "gegevens twee keer (om te schatten en om te controleren) en zijn dus mild: een cel "
            "met een eigen term in het model wordt vrijwel vanzelf nagebootst. Onder het "
            "standaardmodel, dat een term heeft voor elke cel die het rapport toont, vinden ze "
            "vooral grove misfit: een variantiecomponent of een groep cellen die het model mist, "
            "een verkeerde spreiding van de residuen."
        ),
        "drift_check": (
            "Aanvullende controle (geen deel van de poort): lijken de opeenvolgende metingen "
            "van een school meer op elkaar dan het model toelaat (een school die blijvend "
            "verschuift)? p = {p}: {verdict}"
        ),
        "drift_fine": "geen aanwijzing daarvoor.",
        "drift_flagged": (
            "ja. Het model behandelt de afwijkingen van een school per meting als "
            "onafhankelijk; de intervallen van de trends steunen op die aanname "
            "(outputs/validation/validation.md toont wat ze dan kost)."
        ),
        "gate_blind": (
            "Wat ze niet kunnen zien: verstorende factoren die de enquête niet meet; "
            "ontbrekende gegevens die niet willekeurig ontbreken (leerlingen, scholen of "
            "antwoorden die wegvallen om redenen die met de relatie met leraren samenhangen); "
            "meetnon-invariantie (stellingen die in een andere meting of groep iets anders "
            "betekenen; de DIF-controle van een graded-run bekijkt daar een deel van); en "
            "veranderingen in wie meedoet tussen metingen voor zover de achtergrondkenmerken "
            "die niet vangen. Een geslaagde controle is dus geen bewijs dat de verschillen "
            "oorzakelijk of zonder vertekening zijn."
        ),
        "interval_head": "Intervallen en 'significant'",
        "interval_text": (
            "Elk interval is een {interval} van de posterior. De kans op de richting is "
            "het deel van de posterior aan de kant van het teken van het verschil. Een kans "
            "op de richting van minstens {very_likely} is wat een tweezijdige toets "
            "'significant' noemt. Drempels in de tekst: 'zeer waarschijnlijk' >= "
            "{very_likely}, 'waarschijnlijk' >= {likely}, anders 'geen duidelijk verschil'."
        ),
        "disclosure": (
            "Onthulling: dit rapport bevat geen gegevens op leerlingniveau; cellen met minder "
            "dan {min_cell_n} leerlingen zijn onderdrukt en gemarkeerd met 'n < {min_cell_n}'."
        ),
        "diag_figures": "Diagnostische figuren",
        "software": "Software",
        "package": "Pakket",
        "version": "Versie",
        "provenance": "Herkomst: git commit {commit}, Python {python}, seed {seed}.",
        "timings": "Rekentijd: {total} s in totaal, waarvan schatten {fit} s.",
        "footer": "Gemaakt met omlbayes uit {run}. Geen externe bronnen; offline leesbaar.",
        "suppressed": "n < {n}",
        "sd": "SD",
    },
    "en": {
        "title": "Why social relations at school matter: relations with teachers, {years}",
        "subtitle": (
            "Bayesian re-analysis of {source}. Every number in "
            "this report comes from the run folder {run}."
        ),
        "source_monitor": "the {monitor} survey",
        "source_none": "a school monitor survey",
        "banner_failed": "WARNING: THE SAMPLER DIAGNOSTICS FAILED",
        "banner_failed_body": (
            "Failed: {failed}. The posterior may not be reliable; do not use the numbers and "
            "findings in this report until the model has been refitted with more draws or a "
            "changed model."
        ),
        "banner_passed": "Sampler diagnostics passed",
        "toc": "Contents",
        "measurement": "1. The measurement",
        "measurement_intro": (
            "Students rated six statements (1 = strongly disagree ... 5 = strongly agree). "
            "The six answers are combined into the index 'social relations with teachers' "
            "(mean of the answered items, at least {min_items} of 6), standardised to mean 0 "
            "and SD 1 over all students, years and school types. The mean of the original "
            "answers is {raw_mean} (SD {raw_sd})."
        ),
        "item": "Statement",
        "item_mean": "Mean",
        "item_agree": "% (strongly) agree",
        "item_neutral": "% neutral",
        "item_total": "Item-total r",
        "reliability": "Reliability per wave",
        "wave": "Wave",
        "n_complete": "n (complete)",
        "alpha": "Cronbach's alpha",
        "omega": "McDonald's omega",
        "composition": "2. Sample composition (Table 1)",
        "composition_intro": "Percentages per wave and over all waves.",
        "variable": "Variable",
        "level": "Level",
        "all_waves": "All waves",
        "figures": "3. Figures",
        "figures_intro": (
            "Diamond = deviation from the mean over all schools and years (in SD units), "
            "adjusted for school type, gender, age, parental education and region and for "
            "differences in cohort composition; line = {interval}. Cells with fewer than "
            "{min_cell_n} students are not shown (n < {min_cell_n})."
        ),
        "fig1": "Figure 1. Answers to the six statements, {years}",
        "fig2": "Figure 2. Index by wave",
        "fig3": "Figure 3. Index by wave and school type",
        "fig4": "Figure 4. Index by wave and gender",
        "fig5": "Figure 5. Index by wave and parental education",
        "fig6": "Figure 6. Index by wave and region",
        "fig_cross": "Figure not in the factsheet: {what}",
        "fig_extra": "Figure: {what}",
        "results": "4. Results in brief",
        "results_intro": (
            "Every sentence below is computed from the posterior (contrasts.csv and "
            "effects.csv): the direction, the size in SD units, the {interval} and the "
            "probability of direction. 'Very likely' = probability of direction at least "
            "{very_likely}; 'probably' = at least {likely}; otherwise 'no clear difference'. "
        ),
        "results_factsheet": "In grey: what the factsheet itself found, for comparison.",
        "results_skipped": "Not in this run (the data lack those waves): {pairs}.",
        "model_implied": (
            "Not reported as findings: the changes between waves within the crosses "
            "{crosses}. The data do not separate those trends from the two-way terms (no "
            "term of their own for wave x both characteristics, or one that carries under "
            "10% of the uncertainty and does not exclude 0), so the model implies them "
            "rather than the data showing them (contrasts.csv: model_implied)."
        ),
        "extrapolated": (
            "Extrapolated: {cells}. These adjusted means place students in combinations of "
            "characteristics in which no student was observed (e.g. a school type in a "
            "region without such schools); there the estimate rests on the model's prior "
            "(effects.csv: extrapolated, empty_cell_share)."
        ),
        "estimands_title": "Which question the numbers answer",
        "estimands_text": (
            "The adjusted means in this report are those of a school of the area like any "
            "other (school effects at their mean) and of one fixed composition of students "
            "(all waves pooled), so a change between waves is not moved by another mix of "
            "schools or students. Asking about the monitor's own schools keeps each "
            "student's school and that school's deviation in the wave; asking for the trend "
            "as observed takes each wave's own composition. The table gives the changes of "
            "the mean of all students under all three, with the {interval}; the API and the "
            "explorer give them for any group."
        ),
        "estimands_change": "Change",
        "estimand_any_pooled": "A school like any other, fixed composition (this report)",
        "estimand_surveyed_pooled": "The surveyed schools, fixed composition",
        "estimand_any_wave": "As observed: each wave's composition",
        "estimands_differ": (
            "The three differ by up to {largest} SD units: pick the question that fits the use "
            "(docs/api.md)."
        ),
        "estimands_agree": (
            "The three differ by at most {largest} SD units: here the choice matters little."
        ),
        "factsheet_said": "Factsheet: ",
        "explorer": "5. Explore the trends",
        "explorer_intro": (
            "Choose a breakdown, a group and two waves: the page computes how much that group "
            "changed between the two waves (in SD units) and, if you choose a second group, "
            "how much that change differs from the second group's. It uses {draws} joint "
            "posterior draws stored in this file (offline, no server); the {interval} and "
            "P(> 0) come from those draws and may therefore differ slightly from the tables "
            "(Monte Carlo error). Cells with fewer than {min_cell_n} students are left out."
        ),
        "explorer_breakdown": "Breakdown",
        "explorer_group_a": "Group A",
        "explorer_group_b": "Compared with group B",
        "explorer_none": "(none)",
        "explorer_wave_from": "From wave",
        "explorer_wave_to": "To wave",
        "explorer_sentence": (
            "{subject}, {comparison}: {phrase} ({mean} SD; {interval} {lower} to {upper}; "
            "P(> 0) = {p_positive})."
        ),
        "explorer_interval": "{prob}% interval ({kind})",
        "explorer_axis": "change (SD units)",
        "explorer_legend": (
            "Bars: the {draws} draws of the change; dark: inside the {interval}; dot and "
            "line: mean and interval; dashed line: no change."
        ),
        "explorer_noscript": (
            "The explorer needs JavaScript; the figures and sentences above do not."
        ),
        "methods": "6. Methods",
        "data": "Data and exclusions",
        "source": "File",
        "sha256": "SHA-256 of the file",
        "column_map": "Column map",
        "n_read": "Rows read",
        "n_analysed": "Students analysed",
        "excluded": "Excluded: {reason}",
        "no_exclusions": "No rows excluded.",
        "notes": "Notes from reading the file",
        "model": "Model",
        "formula": "Formula",
        "model_text": (
            "One joint multilevel model (Gaussian on the standardised index): fixed effects "
            "for wave, gender, school type, parental education, region and age; partially "
            "pooled wave x subgroup deviations and cross-breakdown terms; an intercept per "
            "school (schools nested in regions). The diamonds are g-computation means: the "
            "expected index with every student set to the given wave and group and the other "
            "characteristics as in the pooled sample, for an average school, minus the "
            "pooled mean."
        ),
        "model_school_by_wave": (
            "Each school also has its own deviation per wave (school x wave): a school's trend "
            "is the school's own."
        ),
        "model_residual_by": "The residual SD differs by {column} (one per level).",
        "model_three_way": (
            "Each cross breakdown also has its own deviation per wave ({crosses}): a cross's "
            "trend is estimated, not implied by the two-way terms."
        ),
        "model_text_graded": (
            "A measurement model (graded response, {link} link): each answer to the {n_items} "
            "statements ({items}) is an ordered category of the student's latent relation "
            "trait, with item-specific thresholds and loadings. The latent trait carries the "
            "flagship's structure: fixed effects for wave, gender, school type, parental "
            "education, region and age; partially pooled wave x subgroup deviations and "
            "cross-breakdown terms; an intercept per school (schools nested in regions); the "
            "residual variance fixed at 1. All effects are in SD units of the latent trait "
            "over all analysed students (per draw: the SD of their latent values), the latent "
            "counterpart of the standardised index; the diamonds are g-computation means on "
            "that scale, minus the pooled mean. Skipped answers contribute nothing (no "
            "imputation)."
        ),
        "priors": "Priors",
        "prior_term": "Parameter",
        "prior_dist": "Prior",
        "sampler": "Sampler",
        "sampler_text": (
            "{backend} backend, sampler {sampler}: {chains} chains x ({tune} tuning + {draws} "
            "kept draws), seed {seed}."
        ),
        "sampler_early": (
            "Sampling stopped at the first checkpoint whose draws passed the gate with a "
            "margin: {kept} of at most {most} draws per chain."
        ),
        "sampler_importance": (
            "{backend} backend: the variance parameters by importance sampling from an "
            "approximation at the mode (each parameter's scanned density, joined by a "
            "Student-t copula; {proposals} proposals, Pareto k {k} "
            "(threshold {k_max})), each chain resampled from its own proposals: {chains} chains "
            "x {draws} draws; the ESS counts proposals, not draws. Seed {seed}."
        ),
        "sampler_importance_failed": (
            "Importance sampling was tried and did not pass ({reason}); hence NUTS."
        ),
        "sampler_folded": (
            "Sampled folded (tau = |w|; sd_parameterization = {setting}): the SD of {terms}."
        ),
        "diagnostics": "Diagnostics",
        "check": "Check",
        "value": "Value",
        "verdict": "Verdict",
        "passed": "passed",
        "failed": "FAILED",
        "not_applicable": "not applicable (no Hamiltonian sampler)",
        "prior_predictive": (
            "Prior predictive check: simulated from the priors alone, the index would have "
            "an SD of {sd} (90% between {lo} and {hi}) against {observed} observed; "
            "{share}% of the simulations lie within half to double that. The posterior "
            "here follows the data (see the prior sensitivity, prior_sensitivity.csv)."
        ),
        "gate_sees": (
            "What the checks can and cannot see. The sampler checks (R-hat, ESS, divergences, "
            "E-BFMI) say whether the draws represent this model's posterior, not whether the "
            "model is right. The predictive checks compare the data with replications from "
            "the fitted model: mean and SD per wave and group, school means per wave, the "
            "residual SD per school type and the spread of cell means (school x wave, the "
            "cross breakdowns). They use the data twice (to fit and to check), so they are "
            "lenient: a cell with its own term in the model is reproduced almost by "
            "construction. Under the default model, which has a term for every cell the "
            "report shows, they mostly detect gross misfit: a variance component or a set of "
            "cells the model lacks, a wrong spread of the residuals."
        ),
        "drift_check": (
            "Advisory check (not part of the gate): do a school's successive waves resemble "
            "each other more than the model allows (a school that drifts persistently)? "
            "p = {p}: {verdict}"
        ),
        "drift_fine": "no sign of it.",
        "drift_flagged": (
            "yes. The model treats a school's deviations in each wave as independent; the "
            "trends' intervals rest on that assumption (outputs/validation/validation.md "
            "shows what it costs when it fails)."
        ),
        "gate_blind": (
            "What they cannot see: confounders the survey does not measure; missing data that "
            "are not missing at random (students, schools or answers lost for reasons related "
            "to their relations with teachers); measurement non-invariance (statements that "
            "mean something else in another wave or group; a graded run's DIF check looks at "
            "part of this); and changes in who takes part between waves beyond what the "
            "covariates capture. A passed check is therefore no evidence that the differences "
            "are causal or free of bias."
        ),
        "interval_head": "Intervals and 'significant'",
        "interval_text": (
            "Every interval is a posterior {interval}. The probability of direction is the "
            "share of the posterior on the side of the sign of the difference. A probability "
            "of direction of at least {very_likely} is what a two-sided test calls "
            "'significant'. "
            "Thresholds in the text: 'very likely' >= {very_likely}, 'probably' >= {likely}, "
            "otherwise 'no clear difference'."
        ),
        "disclosure": (
            "Disclosure control: this report holds no student-level data; cells with fewer "
            "than {min_cell_n} students are suppressed and marked 'n < {min_cell_n}'."
        ),
        "diag_figures": "Diagnostic figures",
        "software": "Software",
        "package": "Package",
        "version": "Version",
        "provenance": "Provenance: git commit {commit}, Python {python}, seed {seed}.",
        "timings": "Computing time: {total} s in all, of which fitting {fit} s.",
        "footer": "Made with omlbayes from {run}. No external resources; readable offline.",
        "suppressed": "n < {n}",
        "sd": "SD",
    },
}

CHECK_TEXT = {
    "nl": {
        "r_hat_below_1_01": "R-hat hoogstens 1,01",
        "ess_bulk_at_least_400": "ESS (bulk) minstens 400",
        "ess_tail_at_least_400": "ESS (staart) minstens 400",
        "no_divergences": "geen divergente overgangen",
        "bfmi_above_0_3": "E-BFMI minstens 0,3",
        "ppc_index_by_wave_group": "voorspelde verdeling per meting en groep (gemiddelde, SD)",
        "ppc_school_wave_means": "voorspelde schoolgemiddelden per meting",
        "ppc_residual_sd_by_school_type": "voorspelde residu-SD per schooltype",
        "ppc_cell_dispersion": "spreiding van cel-gemiddelden (school x meting, kruisingen)",
    },
    "en": {
        "r_hat_below_1_01": "R-hat at most 1.01",
        "ess_bulk_at_least_400": "ESS (bulk) at least 400",
        "ess_tail_at_least_400": "ESS (tail) at least 400",
        "no_divergences": "no divergent transitions",
        "bfmi_above_0_3": "E-BFMI at least 0.3",
        "ppc_index_by_wave_group": "predicted distribution per wave and group (mean, SD)",
        "ppc_school_wave_means": "predicted school means per wave",
        "ppc_residual_sd_by_school_type": "predicted residual SD per school type",
        "ppc_cell_dispersion": "spread of cell means (school x wave, cross breakdowns)",
    },
}

# One sentence: "<subject>: <comparison>: <phrase> (<mean> SD; <interval> <lo> to <hi>;
# probability of direction <pd>)."
SENTENCE_TEXT = {
    "nl": {
        "sentence": (
            "{subject}, {comparison}: {phrase} ({mean} SD; {interval_short} {lower} tot "
            "{upper}; kans op de richting {pd})."
        ),
        "wave_vs": "{wave} vergeleken met {reference}",
        "group_vs": "{group} vergeleken met {reference_group} ({wave})",
        "suppressed": "{subject}, {comparison}: niet getoond (n < {n}).",
        "highest": (
            "{subject}: de hoogste score heeft {best} ({best_mean} SD), de laagste {worst} "
            "({worst_mean} SD), over alle metingen."
        ),
        "largest_gap": "Het verschil {what} is het grootst bij {where} ({mean} SD).",
        "all_waves": "alle metingen",
        "change": "verandering van {reference} naar {wave}",
        "groups_vs": "{group} vergeleken met {reference_group}",
    },
    "en": {
        "sentence": (
            "{subject}, {comparison}: {phrase} ({mean} SD; {interval_short} {lower} to "
            "{upper}; probability of direction {pd})."
        ),
        "wave_vs": "{wave} compared with {reference}",
        "group_vs": "{group} compared with {reference_group} ({wave})",
        "suppressed": "{subject}, {comparison}: not shown (n < {n}).",
        "highest": (
            "{subject}: highest score {best} ({best_mean} SD), lowest {worst} "
            "({worst_mean} SD), over all waves."
        ),
        "largest_gap": "The gap {what} is largest in {where} ({mean} SD).",
        "all_waves": "all waves",
        "change": "change from {reference} to {wave}",
        "groups_vs": "{group} compared with {reference_group}",
    },
}

SCHOOL_TEXT = {
    "nl": {
        "title": "Terugkoppeling voor {school}",
        "region_title": "Terugkoppeling voor regio {region}",
        "index_title": "Terugkoppeling per school en regio",
        "intro": (
            "De gecorrigeerde index 'sociale relaties met leraren' van deze school per meting "
            "(in SD-eenheden, afwijking van het gemiddelde over alle scholen en jaren), met "
            "{interval}len, naast de regio {region} en {whole}."
        ),
        "trend_from_region": (
            "Let op: dit model heeft geen eigen ontwikkeling per school (geen school x meting-"
            "term). De waarden per meting volgen de trend van de regio, verschoven met het vaste "
            "verschil van deze school; veranderingen tussen metingen zijn die van de regio, niet "
            "van deze school zelf."
        ),
        "adjusted": (
            "Gecorrigeerd voor de samenstelling: de waarden zijn berekend alsof elke school "
            "dezelfde mix van leerlingen had ({covariates}); ze tonen het eigen verschil van "
            "de school ten opzichte van scholen van hetzelfde type in dezelfde regio, bovenop "
            "het gemiddelde van alle scholen. Zo vergelijkt de rangorde scholen van alle "
            "schooltypen op hun eigen verschil, niet op het niveau van hun schooltype."
        ),
        "all_waves_note": (
            "'Alle metingen': het gemiddelde van alle metingen samen, met het eigen verschil "
            "van de school gemiddeld over de metingen waarin zij meedeed."
        ),
        "shrinkage": (
            "Krimp naar het gemiddelde: het model trekt de schatting van een school naar die "
            "van haar regio, sterker naarmate de school minder leerlingen heeft, zodat een "
            "kleine school niet door toeval bovenaan of onderaan belandt."
        ),
        "rank": (
            "Positie: deze school staat (over alle metingen) met {prob}% zekerheid tussen plaats "
            "{low} en {high} van de {n} scholen (1 = beste relaties; meest waarschijnlijke "
            "plaats {median})."
        ),
        "rank_note": (
            "De rangorde is per posterior-trekking berekend; de breedte van het interval laat "
            "zien hoe onzeker een plaats in de ranglijst is."
        ),
        "school": "School",
        "region": "Regio",
        "wave": "Meting",
        "n": "n",
        "estimate": "Schatting ({interval})",
        "rank_head": "Plaats ({interval})",
        "all_waves": "Alle metingen",
        "not_surveyed": "niet gemeten",
        "suppressed": "n < {n}",
        "all_suppressed": (
            "Voor deze school worden geen schattingen getoond: in geen enkele meting deden "
            "{n} of meer leerlingen mee."
        ),
        "schools_in_region": "Scholen in deze regio",
        "back": "Terug naar het overzicht",
        "diagnostics_failed": (
            "LET OP: de diagnostiek van de sampler is niet geslaagd; gebruik deze cijfers niet."
        ),
        "disclosure": (
            "Geen gegevens op leerlingniveau; metingen met minder dan {n} leerlingen zijn "
            "onderdrukt (n < {n})."
        ),
        "xlabel": "index (SD-eenheden)",
        "overview_title": "Alle scholen over alle metingen: gecorrigeerde index en plaats",
        "overview_value_head": "Gecorrigeerde index ({interval})",
        "overview_rank_head": "Plaats ({interval})",
        "overview_rank_axis": "plaats (1 = beste relaties)",
        "overview_tier": "groep {tier}",
        "overview_caption": (
            "De waarden zijn gecorrigeerd voor de samenstelling: de index van elke school over "
            "alle metingen (SD-eenheden) is berekend alsof elke school dezelfde mix van "
            "leerlingen had ({covariates}); het zijn dus niet de ruwe gemiddelden van de scholen. "
            "Links: gemiddelde en {interval}. Rechts: de plaats, per posterior-trekking "
            "berekend, met {interval} en meest waarschijnlijke plaats (1 = beste relaties). "
            "Banden: groepen scholen die niet van elkaar te onderscheiden zijn; een nieuwe groep "
            "begint bij de eerste school die aantoonbaar lager ligt dan de bovenste school van "
            "de groep ({interval} van het verschil boven 0). {shown} van {total} scholen; "
            "scholen zonder meting met {n} of meer leerlingen staan er niet in."
        ),
        "tier_head": "Groep",
        "schools": "Scholen",
        "regions": "Regio's",
    },
    "en": {
        "title": "Feedback for {school}",
        "region_title": "Feedback for region {region}",
        "index_title": "Feedback per school and region",
        "intro": (
            "This school's adjusted index 'social relations with teachers' per wave (in SD "
            "units, deviation from the mean over all schools and years), with {interval}s, "
            "next to its region {region} and {whole}."
        ),
        "trend_from_region": (
            "Note: this model has no school-specific development (no school x wave term). The "
            "per-wave values follow the region's trend, shifted by this school's constant "
            "difference; changes between waves are the region's, not this school's own."
        ),
        "adjusted": (
            "Adjusted for composition: the values are computed as if every school had the "
            "same mix of students ({covariates}); they show the school's own difference from "
            "schools of its type in its region, on top of the mean of all schools. So the "
            "rank compares schools of all types on their own difference, not on the level of "
            "their school type."
        ),
        "all_waves_note": (
            "'All waves': the mean over all waves together, with the school's own difference "
            "averaged over the waves it took part in."
        ),
        "shrinkage": (
            "Shrinkage: the model pulls a school's estimate towards its region's, the more "
            "so the fewer students the school has, so that a small school does not end up at "
            "the top or bottom by chance."
        ),
        "rank": (
            "Position: over all waves this school ranks, with {prob}% probability, between "
            "{low} and {high} of {n} schools (1 = best relations; most likely rank {median})."
        ),
        "rank_note": (
            "The rank is computed for every posterior draw; the width of the interval shows "
            "how uncertain a place in a league table is."
        ),
        "school": "School",
        "region": "Region",
        "wave": "Wave",
        "n": "n",
        "estimate": "Estimate ({interval})",
        "rank_head": "Rank ({interval})",
        "all_waves": "All waves",
        "not_surveyed": "not surveyed",
        "suppressed": "n < {n}",
        "all_suppressed": (
            "No estimates are shown for this school: no wave had {n} or more students."
        ),
        "schools_in_region": "Schools in this region",
        "back": "Back to the overview",
        "diagnostics_failed": (
            "WARNING: the sampler diagnostics failed; do not use these numbers."
        ),
        "disclosure": (
            "No student-level data; waves with fewer than {n} students are suppressed (n < {n})."
        ),
        "xlabel": "index (SD units)",
        "overview_title": "All schools over all waves: adjusted index and rank",
        "overview_value_head": "Adjusted index ({interval})",
        "overview_rank_head": "Rank ({interval})",
        "overview_rank_axis": "rank (1 = best relations)",
        "overview_tier": "tier {tier}",
        "overview_caption": (
            "Values are composition-adjusted: each school's index over all waves (SD units) is "
            "computed as if every school had the same mix of students ({covariates}), so these "
            "are not the schools' raw averages. Left: mean and {interval}. Right: the rank, "
            "computed per posterior draw, with its {interval} and most likely rank (1 = best "
            "relations). Bands: tiers of schools that cannot be told apart; a new tier starts "
            "at the first school that the tier's top school is credibly above ({interval} of "
            "their difference above 0). {shown} of {total} schools; schools with no wave of {n} "
            "or more students are left out."
        ),
        "tier_head": "Tier",
        "schools": "Schools",
        "regions": "Regions",
    },
}
