"""The pretraining corpus of the embedded tiny model: simple English generated from templates.

The corpus is regenerated from a seed (no download), and it is written over the same word lists
as the instruction tasks (lora_lab/tasks.py). Like the web text real LLMs are pretrained on, it
holds the knowledge the tasks need (which number is larger, how long a list is, copying words),
including questions answered in running text ("Which number is larger: 47 or 82? the answer is
82."), but never the `[INST]` chat format and never a held-out question. So the base model knows
the skills; instruction tuning teaches it to use them inside the chat format and then end its turn
with `</s>`. Copy-style sentences
("... wrote A B C; ... read it back: A B C") matter: without them a tiny model cannot copy from
its prompt.
"""

from __future__ import annotations

import random

from .tasks import (
    ALL_WORDS,
    ANIMALS,
    CATEGORIES,
    COLORS,
    FOODS,
    NAMES,
    NEGATIVE,
    ORDINALS,
    PLACES,
    POSITIVE,
    TASKS,
    THINGS,
    make_splits,
)

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VERBS = ["saw", "liked", "found", "lost", "wanted", "painted", "carried", "sold", "bought", "kept"]
MOVES = ["walked", "ran", "went", "drove", "came", "swam", "rode"]


def _story(r: random.Random) -> str:
    name, other = r.sample(NAMES, 2)
    return r.choice([
        f"{name} {r.choice(MOVES)} to the {r.choice(PLACES)} with {other}.",
        f"{name} {r.choice(VERBS)} a {r.choice(COLORS)} {r.choice(THINGS)} at the {r.choice(PLACES)}.",
        f"the {r.choice(ANIMALS)} {r.choice(MOVES)} near the {r.choice(PLACES)}.",
        f"{name} ate {r.choice(FOODS)} and {r.choice(FOODS)} in the {r.choice(PLACES)}.",
        f"{name} gave {other} a {r.choice(THINGS)}.",
    ])


def _category(r: random.Random) -> str:
    name = r.choice(list(CATEGORIES))
    word = r.choice(CATEGORIES[name])
    a, b = r.sample(CATEGORIES[name], 2)
    thing = r.choice(THINGS)
    return r.choice([
        f"a {word} is a {name}.",
        f"{a} and {b} are both a kind of {name}.",
        f"a {thing} is not a {name}, but a {word} is.",
        f"of {thing}, {word} and {r.choice(PLACES)}, only {word} is a {name}.",
    ])


def _review(r: random.Random) -> str:
    good = r.random() < 0.5
    adjs = POSITIVE if good else NEGATIVE
    x, y = r.sample(adjs, 2)
    a, b = r.sample(THINGS + FOODS, 2)
    verdict = "positive" if good else "negative"
    feeling = r.choice(["i liked it", "we loved it", "it made me happy"] if good
                       else ["i hated it", "we did not like it", "it made me sad"])
    return r.choice([
        f"the {a} was {x} and the {b} was {y}. {feeling}. this review is {verdict}.",
        f"{r.choice(NAMES)} said the {a} was {x}. that is a {verdict} thing to say.",
        f"a {x} {a} and a {y} {b}: {feeling}.",
    ])


def _numbers(r: random.Random) -> str:
    a, b = r.sample(range(10, 100), 2)
    hi, lo = max(a, b), min(a, b)
    n = r.randrange(10, 99)
    return r.choice([
        f"{hi} is larger than {lo}.",
        f"{lo} is smaller than {hi}.",
        f"of {a} and {b}, the larger number is {hi}.",
        f"after {n} comes {n + 1}, and {n + 1} is larger than {n}.",
        f"{r.choice(NAMES)} had {a} coins and {r.choice(NAMES)} had {b}, so the larger pile had {hi}.",
    ])


def _counting(r: random.Random) -> str:
    k = r.randint(2, 7)
    words = r.sample(ALL_WORDS, k)
    listed = ", ".join(words)
    return r.choice([
        f"{r.choice(NAMES)} packed {k} things: {listed}.",
        f"the list {listed} has {k} words.",
        f"there are {NUMBER_WORDS[k]} words in {listed}, that is {k}.",
    ])


def _copying(r: random.Random) -> str:
    words = r.sample(ALL_WORDS, r.randint(3, 5))
    said = " ".join(words)
    a, b = r.sample(NAMES, 2)
    n = r.randrange(len(words))
    return r.choice([
        f"{a} wrote {said}; {b} read it back: {said}.",
        f"in {said}, the {ORDINALS[n]} word is {words[n]}.",
        f"{a} said {said}, and the {ORDINALS[n]} word was {words[n]}.",
        f"say it again: {said}. {said}.",
    ])


def _question(r: random.Random, held_out: frozenset) -> str:
    """A task question answered in running text, never one of the held-out questions."""
    make = r.choice(list(TASKS.values()))
    ex = make(r)
    while ex.prompt in held_out:
        ex = make(r)
    return f"{ex.prompt} {ex.reply}"


FAMILIES = (_story, _category, _review, _numbers, _counting, _copying)


def generate_corpus(n_docs: int = 25_000, seed: int = 0) -> list[str]:
    """Return `n_docs` short documents of 3 to 8 sentences each, deterministic for a seed.

    About a quarter of the sentences are task questions with their answers; the held-out questions
    of `make_splits(seed=seed)` never appear.
    """
    r = random.Random(seed)
    held_out = frozenset(ex.prompt for ex in make_splits(seed=seed)[1])

    def sentence() -> str:
        return _question(r, held_out) if r.random() < 0.25 else r.choice(FAMILIES)(r)

    return [" ".join(sentence() for _ in range(r.randint(3, 8))) for _ in range(n_docs)]
