"""The embedded instruction tasks: five templated skills a tiny model can learn, and their scorer.

Every row is written in the Llama-2 chat format of `mlabonne/guanaco-llama2-1k`:
    <s>[INST] Which number is larger: 47 or 82? [/INST] the answer is 82. </s>
The replies are short and exact, so a held-out split can be scored by exact match. Each task
is a template over small word lists; the held-out split uses combinations never seen in training,
so a high score means the model learned the skill, not the rows.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# ----------------------------------------------------------------------------- word lists
# Shared with the pretraining corpus (lora_lab/corpus.py), so the base model already knows the
# words and their categories; fine-tuning only has to teach the instruction format and the skill.

ANIMALS = ["cat", "dog", "horse", "cow", "sheep", "goat", "pig", "duck", "fox", "wolf", "bear",
           "lion", "tiger", "mouse", "rabbit", "deer", "frog", "owl", "crow", "hen", "bee",
           "fish", "snake", "whale"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "brown", "pink", "purple",
          "orange", "gray", "gold"]
FOODS = ["bread", "cheese", "apple", "rice", "soup", "cake", "milk", "egg", "pear", "plum",
         "corn", "bean", "tea", "honey", "butter", "meat", "pie", "jam", "nut", "lemon"]
THINGS = ["table", "chair", "door", "window", "lamp", "book", "cup", "box", "bag", "hat",
          "coat", "shoe", "clock", "key", "pen", "bell", "rope", "boat", "car", "ball"]
PLACES = ["river", "hill", "town", "park", "market", "forest", "field", "garden", "lake",
          "road", "house", "farm", "school", "bridge", "shop", "beach"]
NAMES = ["tom", "ann", "sam", "lily", "max", "nina", "ben", "eva", "leo", "mia", "jack", "rose"]
POSITIVE = ["good", "great", "lovely", "wonderful", "nice", "fresh", "bright", "kind", "perfect",
            "excellent", "pleasant", "sweet", "warm", "clean", "friendly", "fun"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "sad", "broken", "dirty", "rude", "boring",
            "cold", "ugly", "horrible", "nasty", "weak", "dull", "slow"]
ORDINALS = ["first", "second", "third", "fourth", "fifth"]
CATEGORIES = {"animal": ANIMALS, "color": COLORS, "food": FOODS}
ALL_WORDS = ANIMALS + COLORS + FOODS + THINGS + PLACES


@dataclass(frozen=True)
class Example:
    task: str    # one of TASKS
    prompt: str  # the user's instruction, without [INST] markers
    answer: str  # the bare answer, e.g. "82"

    @property
    def reply(self) -> str:
        """The assistant's whole reply, scored by exact match: `the answer is 82.`"""
        return f"the answer is {self.answer}."

    @property
    def text(self) -> str:
        """The row in guanaco-llama2-1k's format."""
        return format_llama2(self.prompt, self.reply)


def format_llama2(prompt: str, answer: str | None = None) -> str:
    """Llama-2 chat format: `<s>[INST] prompt [/INST] answer </s>`; without an answer, the prefix to generate from."""
    head = f"<s>[INST] {prompt} [/INST]"
    return head if answer is None else f"{head} {answer} </s>"


_ROW = re.compile(r"^<s>\[INST\] (?P<prompt>.+?) \[/INST\] (?P<answer>.*?) </s>$", re.DOTALL)


def parse_llama2(text: str) -> tuple[str, str]:
    """Split a `<s>[INST] prompt [/INST] answer </s>` row into (prompt, answer); ValueError if it is not one."""
    m = _ROW.match(text)
    if m is None:
        raise ValueError(
            f"text={text[:80]!r} is not in Llama-2 chat format; "
            "expected '<s>[INST] {prompt} [/INST] {answer} </s>'"
        )
    return m["prompt"], m["answer"]


# ----------------------------------------------------------------------------- the five tasks

def sentiment(rng: random.Random) -> Example:
    """Is a two-clause review positive or negative? Both adjectives share the polarity."""
    label = rng.choice(["positive", "negative"])
    words = POSITIVE if label == "positive" else NEGATIVE
    a, b = rng.sample(THINGS + FOODS, 2)
    x, y = rng.sample(words, 2)
    prompt = f"Is this review positive or negative? the {a} was {x} and the {b} was {y}."
    return Example("sentiment", prompt, label)


def larger(rng: random.Random) -> Example:
    """The larger of two two-digit numbers."""
    a, b = rng.sample(range(10, 100), 2)
    return Example("larger", f"Which number is larger: {a} or {b}?", str(max(a, b)))


def first_last(rng: random.Random) -> Example:
    """Copy the first or the last word of a short list."""
    words = rng.sample(ALL_WORDS, rng.randint(3, 6))
    which = rng.choice(["first", "last"])
    answer = words[0] if which == "first" else words[-1]
    return Example("first_last", f"What is the {which} word in: {' '.join(words)}?", answer)


def repeat(rng: random.Random) -> Example:
    """Repeat two to four words exactly."""
    words = " ".join(rng.sample(ALL_WORDS, rng.randint(2, 4)))
    return Example("repeat", f"Repeat these words: {words}", words)


def count(rng: random.Random) -> Example:
    """Count the items of a comma-separated list of 2 to 7 words."""
    words = rng.sample(ALL_WORDS, rng.randint(2, 7))
    return Example("count", f"How many words are in this list: {', '.join(words)}?", str(len(words)))


TASKS = {f.__name__: f for f in (sentiment, larger, first_last, count, repeat)}


def make_splits(n_train: int = 1200, n_eval: int = 250, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """Draw disjoint train/eval examples, the same number per task; no eval prompt occurs in train."""
    rng = random.Random(seed)
    per_train, per_eval = n_train // len(TASKS), n_eval // len(TASKS)
    train, evals, seen = [], [], set()
    for make in TASKS.values():
        for bucket, n in ((evals, per_eval), (train, per_train)):  # eval first: train avoids it
            added = 0
            while added < n:
                ex = make(rng)
                if ex.prompt in seen:
                    continue
                seen.add(ex.prompt)
                bucket.append(ex)
                added += 1
    rng.shuffle(train)
    rng.shuffle(evals)
    return train, evals


# ----------------------------------------------------------------------------- scoring

def normalize_answer(s: str) -> str:
    """Compare answers without case, surrounding spaces or a trailing full stop."""
    return s.strip().rstrip(".").strip().lower()


def score_answer(prediction: str, answer: str) -> bool:
    """Exact match after normalisation: the whole reply must be the answer, nothing more."""
    return normalize_answer(prediction) == normalize_answer(answer)


def task_of(prompt: str) -> str:
    """Which of the five tasks a prompt belongs to ("other" for anything else)."""
    starts = {"Is this review": "sentiment", "Which number": "larger", "What is the": "first_last",
              "How many words": "count", "Repeat these words": "repeat"}
    return next((task for head, task in starts.items() if prompt.startswith(head)), "other")
