"""Hand-written factual-recall prompts for interchange interventions: which country a city is in.

Every prompt is ``"The city of {city} is in the country of"`` with a city that is one token (with
its leading space), so all prompts have the same token count and the city sits at the same
position; the answer is the country's name, one token. Nothing is downloaded: the facts below
were written by hand (country -> cities), and :func:`city_facts` keeps only those the model gets
right (top-1 over its whole vocabulary), so that an intervention is measured on facts the model
knows.

* :func:`city_facts`: the prompts as token ids, with answers, country labels and the positions
  of the city and of the last token; the facts that were dropped and why.
* :func:`split_by_city`: a train / test split stratified by country (test cities are never seen
  in training).
* :func:`interchange_rows`: pairs (base, source) of prompts with *different* answers: the
  counterfactual an interchange intervention must produce is the source's answer.

Model-agnostic: only the tokenizer (``model.tokenizer``) and ``model(tokens) -> logits`` are used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hooked.protocol import model_device

TEMPLATE = "The city of {city} is in the country of"

# country -> cities, written by hand; only cities that are one token with a leading space survive
CITIES: dict[str, tuple[str, ...]] = {
    "France": (
        "Paris",
        "Lyon",
        "Marseille",
        "Nice",
        "Bordeaux",
        "Toulouse",
        "Lille",
        "Strasbourg",
        "Nantes",
        "Cannes",
        "Versailles",
        "Grenoble",
        "Avignon",
        "Dijon",
        "Rouen",
        "Reims",
        "Montpellier",
        "Calais",
    ),
    "Italy": (
        "Rome",
        "Milan",
        "Venice",
        "Naples",
        "Florence",
        "Turin",
        "Bologna",
        "Genoa",
        "Palermo",
        "Verona",
        "Pisa",
        "Siena",
        "Bari",
        "Padua",
        "Parma",
        "Trieste",
        "Catania",
    ),
    "Spain": (
        "Madrid",
        "Barcelona",
        "Seville",
        "Valencia",
        "Bilbao",
        "Malaga",
        "Granada",
        "Toledo",
        "Cordoba",
        "Zaragoza",
        "Pamplona",
        "Alicante",
        "Salamanca",
    ),
    "Germany": (
        "Berlin",
        "Munich",
        "Hamburg",
        "Frankfurt",
        "Cologne",
        "Stuttgart",
        "Dresden",
        "Leipzig",
        "Bonn",
        "Hanover",
        "Nuremberg",
        "Heidelberg",
        "Bremen",
        "Dortmund",
        "Essen",
        "Potsdam",
        "Mainz",
    ),
    "Japan": (
        "Tokyo",
        "Osaka",
        "Kyoto",
        "Yokohama",
        "Hiroshima",
        "Nagoya",
        "Sapporo",
        "Kobe",
        "Nagasaki",
        "Fukuoka",
        "Sendai",
        "Nara",
    ),
    "China": (
        "Beijing",
        "Shanghai",
        "Shenzhen",
        "Guangzhou",
        "Wuhan",
        "Chengdu",
        "Nanjing",
        "Tianjin",
        "Hangzhou",
        "Harbin",
        "Chongqing",
    ),
    "Russia": (
        "Moscow",
        "Petersburg",
        "Novosibirsk",
        "Kazan",
        "Vladivostok",
        "Sochi",
        "Volgograd",
        "Murmansk",
    ),
    "India": (
        "Delhi",
        "Mumbai",
        "Bangalore",
        "Chennai",
        "Kolkata",
        "Hyderabad",
        "Agra",
        "Jaipur",
        "Pune",
        "Calcutta",
        "Bombay",
        "Madras",
    ),
    "Canada": (
        "Toronto",
        "Montreal",
        "Vancouver",
        "Ottawa",
        "Calgary",
        "Edmonton",
        "Winnipeg",
        "Quebec",
        "Halifax",
        "Victoria",
    ),
    "Brazil": ("Rio", "Brasilia", "Salvador", "Recife", "Manaus", "Fortaleza"),
    "Egypt": ("Cairo", "Alexandria", "Luxor", "Giza", "Aswan"),
    "Australia": ("Sydney", "Melbourne", "Brisbane", "Perth", "Adelaide", "Canberra", "Darwin", "Hobart"),
    "England": (
        "London",
        "Manchester",
        "Liverpool",
        "Birmingham",
        "Leeds",
        "Oxford",
        "Cambridge",
        "Bristol",
        "Sheffield",
        "Newcastle",
        "Nottingham",
        "Brighton",
        "York",
    ),
    "Scotland": ("Edinburgh", "Glasgow", "Aberdeen", "Dundee"),
    "Greece": ("Athens", "Thessaloniki", "Sparta", "Corinth"),
    "Poland": ("Warsaw", "Krakow", "Gdansk", "Poznan"),
    "Mexico": ("Guadalajara", "Monterrey", "Cancun", "Tijuana", "Acapulco"),
    "Turkey": ("Istanbul", "Ankara", "Izmir", "Antalya"),
    "Netherlands": ("Amsterdam", "Rotterdam", "Utrecht", "Eindhoven"),
    "Portugal": ("Lisbon", "Porto"),
    "Austria": ("Vienna", "Salzburg", "Innsbruck", "Graz"),
    "Ireland": ("Dublin", "Cork", "Galway", "Limerick"),
    "Sweden": ("Stockholm", "Gothenburg", "Malmo", "Uppsala"),
    "Norway": ("Oslo", "Bergen", "Trondheim"),
    "Kenya": ("Nairobi", "Mombasa"),
    "Argentina": ("Rosario", "Mendoza"),
    "Switzerland": ("Zurich", "Geneva", "Basel", "Bern", "Lausanne", "Lucerne"),
    "Belgium": ("Brussels", "Antwerp", "Bruges", "Ghent"),
    "Israel": ("Jerusalem", "Haifa"),
    "Iran": ("Tehran", "Isfahan", "Shiraz", "Tabriz"),
    "Pakistan": ("Karachi", "Lahore", "Islamabad"),
    "Thailand": ("Bangkok", "Phuket"),
    "Korea": ("Seoul", "Busan"),
    "Nigeria": ("Lagos", "Abuja"),
    "Peru": ("Lima", "Cusco"),
    "Chile": ("Santiago", "Valparaiso"),
    "Colombia": ("Bogota", "Medellin", "Cali"),
    "Cuba": ("Havana",),
    "Morocco": ("Casablanca", "Marrakech", "Rabat", "Fez", "Tangier"),
    "Iraq": ("Baghdad", "Basra", "Mosul"),
    "Syria": ("Damascus", "Aleppo"),
    "Ukraine": ("Kiev", "Kyiv", "Odessa", "Kharkiv", "Lviv"),
    "Hungary": ("Budapest",),
    "Denmark": ("Copenhagen", "Aarhus"),
    "Finland": ("Helsinki",),
}


@dataclass
class Facts:
    """Prompts of one template and one token count, with their one-token answers.

    Attributes:
        tokens: [n, pos] token ids.
        answers: [n] answer token ids.
        labels: [n] index into ``countries``.
        subjects, countries: the city of each row; the answer names (``labels`` index them).
        subject_position: where the city's token sits (the same in every row).
        dropped: why facts were left out (``{"not one token": [...], "model wrong": [...]}``).
    """

    tokens: Tensor
    answers: Tensor
    labels: Tensor
    subjects: list[str]
    countries: list[str]
    subject_position: int
    template: str = TEMPLATE
    dropped: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def last_position(self) -> int:
        return self.tokens.shape[1] - 1

    def positions(self) -> dict[str, int]:
        """Named positions: the subject's token and the last token (where the answer is read)."""
        return {"subject": self.subject_position, "last": self.last_position}

    def subset(self, rows: Tensor | Sequence[int]) -> Facts:
        rows = torch.as_tensor(rows, dtype=torch.long)
        return Facts(
            self.tokens[rows],
            self.answers[rows],
            self.labels[rows],
            [self.subjects[i] for i in rows.tolist()],
            self.countries,
            self.subject_position,
            self.template,
            self.dropped,
        )

    def to_json(self) -> dict[str, Any]:
        per_country = Counter(self.countries[i] for i in self.labels.tolist())
        return {
            "template": self.template,
            "n": len(self),
            "tokens_per_prompt": int(self.tokens.shape[1]),
            "subject_position": self.subject_position,
            "n_countries": len(per_country),
            "per_country": dict(sorted(per_country.items(), key=lambda kv: -kv[1])),
            "dropped": {k: len(v) for k, v in self.dropped.items()},
            "dropped_examples": {k: v[:20] for k, v in self.dropped.items()},
        }


def city_facts(
    model: Any,
    cities: Mapping[str, Sequence[str]] = CITIES,
    *,
    template: str = TEMPLATE,
    known_only: bool = True,
    batch_size: int = 64,
) -> Facts:
    """The prompts of ``template`` for ``cities`` that tokenize alike and (``known_only``) that the
    model answers correctly, top-1 over its whole vocabulary.

    Args:
        model: a language model with ``model.tokenizer`` whose forward returns logits (any backend).
        cities: country -> city names; the country (with a leading space) must be one token.
        template: a prompt with ``{city}``; the answer follows its last token.
    """
    from hooked.lm import logits_of

    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"city_facts: {type(model).__name__} has no tokenizer (load it with hooked.lm.load)")
    if "{city}" not in template:
        raise ValueError(f"city_facts: the template must contain {{city}}, got {template!r}")

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    head, tail = template.split("{city}", 1)
    prefix, suffix = ids(head.rstrip()), ids(tail)
    dropped: dict[str, list[str]] = {"answer not one token": [], "city not one token": [], "model wrong": []}
    rows: list[tuple[str, str, list[int], int]] = []
    for country, names in cities.items():
        answer = ids(" " + country)
        if len(answer) != 1:
            dropped["answer not one token"].append(country)
            continue
        for city in names:
            city_ids = ids(" " + city)
            tokens = ids(template.format(city=city))
            if len(city_ids) != 1 or tokens != prefix + city_ids + suffix:  # so every prompt has one length
                dropped["city not one token"].append(city)
                continue
            rows.append((city, country, tokens, answer[0]))
    if not rows:
        raise ValueError(
            f"city_facts: no city of the {len(cities)} countries gives a prompt with a one-token city "
            "and answer"
        )
    tokens = torch.tensor([r[2] for r in rows], dtype=torch.long)
    answers = torch.tensor([r[3] for r in rows], dtype=torch.long)
    if known_only:
        device = model_device(model)
        with torch.no_grad():
            preds = torch.cat(
                [logits_of(model(t.to(device)))[:, -1].argmax(-1).cpu() for t in tokens.split(batch_size)]
            )
        known = preds == answers
        dropped["model wrong"] = [f"{r[0]} ({r[1]})" for r, k in zip(rows, known.tolist()) if not k]
        rows = [r for r, k in zip(rows, known.tolist()) if k]
        tokens, answers = tokens[known], answers[known]
    countries = list(dict.fromkeys(r[1] for r in rows))
    labels = torch.tensor([countries.index(r[1]) for r in rows], dtype=torch.long)
    return Facts(tokens, answers, labels, [r[0] for r in rows], countries, len(prefix), template, dropped)


def split_by_city(facts: Facts, test_fraction: float = 0.3, seed: int = 0) -> tuple[Facts, Facts]:
    """Train / test facts, stratified by country: ``round(test_fraction * n_c)`` cities of each
    country with ``n_c >= 2`` cities go to the test set (countries with one city stay in training)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    g = torch.Generator().manual_seed(seed)
    test = torch.zeros(len(facts), dtype=torch.bool)
    for c in facts.labels.unique().tolist():
        rows = (facts.labels == c).nonzero().flatten()
        k = round(test_fraction * len(rows)) if len(rows) >= 2 else 0
        test[rows[torch.randperm(len(rows), generator=g)[:k]]] = True
    if not test.any() or test.all():
        raise ValueError(
            f"split_by_city: {len(facts)} facts give an empty train or test set "
            f"at test_fraction={test_fraction}"
        )
    return facts.subset(torch.nonzero(~test).flatten()), facts.subset(torch.nonzero(test).flatten())


def interchange_rows(
    labels: Tensor, partners: int = 1, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``(base, source)`` row indices: each row ``partners`` times as the base, each time with a
    random source row of a *different* label (so the counterfactual answer differs from the base's).

    Returns two [n * partners] index tensors (base rows in blocks: ``base = arange(n).repeat(partners)``).
    """
    n = labels.shape[0]
    if partners < 1:
        raise ValueError(f"partners must be >= 1, got {partners}")
    differ = labels[:, None] != labels[None, :]  # [n, n]
    if not bool(differ.any(1).all()):
        raise ValueError(
            "interchange_rows: every row needs a partner with another label (all rows share one label?)"
        )
    base = torch.arange(n).repeat(partners)
    weights = differ.float()[base]
    source = torch.multinomial(weights, 1, generator=generator).flatten()
    return base, source
