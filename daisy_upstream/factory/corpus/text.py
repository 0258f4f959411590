"""Deterministic, self-written English sentence generator.

The corpora need thousands of distinct, plausible read-speech sentences, and no copied
text may ship with the package. This module holds a small hand-written grammar (word lists
and sentence templates, all written for this project) and expands it with a seeded
random generator. The same ``seed`` always yields the same sentences in the same order.

Sentences contain only upper-case letters A-Z, spaces and apostrophes, the character set
of LibriSpeech transcripts (and of s3prl's ``char.dict``), so they can be used as ASR
targets as they are.
"""

from __future__ import annotations

import random
from typing import Callable, Dict, List, Sequence

__all__ = ["generate_sentences", "normalize_text", "ALPHABET"]

#: Characters a transcript may contain (besides the space).
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"


def _words(text: str) -> List[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


_W: Dict[str, List[str]] = {
    "name": _words(
        "anna, ben, clara, david, emma, felix, grace, henry, iris, jack, laura, martin, nina, "
        "oliver, paula, quentin, rosa, samuel, tara, victor, wendy, arthur, bella, carl, diana, "
        "edgar, fiona, george, hannah, isaac, julia, kevin, lucy, marcus, nora, oscar, peter, "
        "rachel, simon, ursula, walter, yvonne, zoe, alice, bruno, cecilia, daniel, eleanor, "
        "frank, helen, ivan, joan, leo, maria, noah, olga, ray, sofia"
    ),
    "person": _words(
        "farmer, teacher, doctor, baker, sailor, painter, driver, student, neighbour, pilot, "
        "gardener, writer, singer, carpenter, nurse, fisherman, merchant, traveller, musician, "
        "shepherd, soldier, captain, clerk, miller, tailor, hunter, poet, judge, cook, porter, "
        "weaver, potter, stranger, guide, grandmother, grandfather, uncle, aunt, cousin, child, "
        "boy, girl, old man, young woman, postman, librarian, engineer, fireman, waiter"
    ),
    "person_adj": _words(
        "old, young, tall, short, kind, busy, tired, clever, quiet, cheerful, careful, famous, "
        "patient, friendly, lazy, brave, shy, polite, honest, lucky"
    ),
    "animal": _words(
        "dog, cat, horse, cow, goat, rabbit, fox, owl, crow, duck, goose, bear, deer, wolf, "
        "pig, donkey, hen, robin, swan, frog, eagle, squirrel, pony, lamb, kitten, puppy"
    ),
    "thing": _words(
        "book, letter, basket, lamp, chair, table, cup, bottle, key, coat, hat, boat, "
        "candle, map, clock, bell, rope, ladder, blanket, kettle, bucket, wagon, bicycle, "
        "picture, mirror, jar, spoon, bag, stone, feather, ring, drum, flute, violin, "
        "newspaper, umbrella, pencil, notebook, envelope, parcel, carpet, pillow, wheel, "
        "hammer, shovel, cart, barrel, sack, coin, radio, camera, suitcase, teapot, plate"
    ),
    "food": _words(
        "bread, soup, cheese, apples, pears, plums, cherries, milk, tea, coffee, butter, "
        "honey, rice, potatoes, carrots, beans, eggs, fish, cake, pie, jam, oranges, lemons, "
        "onions, corn, porridge"
    ),
    "adj": _words(
        "old, new, small, big, heavy, light, warm, cold, bright, dark, clean, dusty, wet, "
        "dry, empty, full, round, narrow, wide, tall, short, strange, simple, broken, shiny, "
        "wooden, golden, silver, soft, hard, fresh, ancient, tiny, huge, lovely, plain, "
        "famous, hidden, useful, expensive, cheap, precious"
    ),
    "verb_i": _words(
        "laughed, smiled, waited, slept, sang, danced, shouted, whispered, walked, ran, "
        "rested, listened, worked, travelled, hurried, stopped, paused, wandered, returned, "
        "arrived"
    ),
    "adv": _words(
        "slowly, quickly, quietly, carefully, happily, sadly, suddenly, gently, loudly, "
        "calmly, patiently, eagerly, softly, early, late, again, together, alone"
    ),
    "number": _words(
        "two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, twenty, thirty, forty, fifty, a hundred"
    ),
    "feeling": _words(
        "happy, tired, hungry, worried, surprised, glad, proud, nervous, sleepy, cheerful, "
        "curious, lonely, angry, calm, excited"
    ),
    "colour": _words("red, blue, green, yellow, white, black, brown, grey, orange, purple, pink"),
    "conj": _words("because, while, although, when, after, before, until, since"),
}
_TIME = _words(
    "this morning, last night, yesterday, today, tomorrow, at noon, in the evening, "
    "on monday, on tuesday, on wednesday, on thursday, on friday, on saturday, on sunday, "
    "every day, after dinner, before breakfast, in the spring, in the summer, in the autumn, "
    "in the winter, at dawn, at midnight, a week ago, next year, later that day, after lunch, "
    "early in the morning, that afternoon"
)
_VERB_T = [
    tuple(p.split(":"))
    for p in _words(
        "found:found, lost:lost, carried:carried, opened:opened, closed:closed, painted:painted, "
        "cleaned:cleaned, mended:mended, sold:sold, bought:bought, borrowed:borrowed, lent:lent, "
        "hid:hidden, dropped:dropped, picked up:picked up, packed:packed, washed:washed, "
        "brought:brought, took:taken, left:left, kept:kept, moved:moved, fixed:fixed, "
        "wrapped:wrapped, counted:counted, watched:watched, noticed:noticed, pushed:pushed, "
        "pulled:pulled, held:held, gave away:given away, looked for:looked for"
    )
]
_WEATHER = _words(
    "it was raining, the wind was cold, the sun was shining, snow was falling, "
    "the sky was grey, it was very hot, a storm was coming, the fog was thick, "
    "the air was still, it was getting dark"
)
_PLACE = [
    "the " + p
    for p in _words(
        "market, station, harbour, village, river, forest, hills, school, library, church, farm, "
        "mill, bakery, garden, kitchen, cellar, attic, square, beach, valley, lake, bridge, town, "
        "city, castle, museum, hospital, inn, meadow, orchard, field, island, cottage, office, "
        "shop, post office, theatre, park, bus stop, old barn"
    )
]
_PLURAL = {
    "mouse": "mice",
    "goose": "geese",
    "wolf": "wolves",
    "puppy": "puppies",
    "pony": "ponies",
    "deer": "deer",
    "fox": "foxes",
    "knife": "knives",
}


def _plural(noun: str) -> str:
    if noun in _PLURAL:
        return _PLURAL[noun]
    return noun + ("es" if noun.endswith(("x", "s", "sh", "ch")) else "s")


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _np(r: random.Random) -> str:
    """A noun phrase naming a person."""
    k = r.random()
    if k < 0.4:
        return r.choice(_W["name"])
    if k < 0.75:
        return "the " + r.choice(_W["person"])
    if k < 0.9:
        return "the " + r.choice(_W["person_adj"]) + " " + r.choice(_W["person"])
    return "my " + r.choice(_W["person"])


def _obj(r: random.Random) -> str:
    """A noun phrase naming a thing."""
    k = r.random()
    noun = r.choice(_W["thing"])
    if k < 0.35:
        return "the " + noun
    if k < 0.65:
        return _a(r.choice(_W["adj"]) + " " + noun)
    if k < 0.8:
        return "the " + r.choice(_W["colour"]) + " " + noun
    if k < 0.9:
        return r.choice(_W["number"]) + " " + _plural(noun)
    return r.choice(["his ", "her ", "their ", "our "]) + noun


def _t_transitive(r: random.Random) -> str:
    s = f"{_np(r)} {r.choice(_VERB_T)[0]} {_obj(r)}"
    if r.random() < 0.5:
        s += " " + r.choice(["at", "near", "behind", "outside", "inside", "beside"]) + " " + r.choice(_PLACE)
    if r.random() < 0.4:
        s += " " + r.choice(_TIME)
    return s


def _t_intransitive(r: random.Random) -> str:
    s = f"{_np(r)} {r.choice(_W['verb_i'])} {r.choice(_W['adv'])}"
    if r.random() < 0.6:
        s += " " + r.choice(["in", "at", "near", "across", "behind", "outside"]) + " " + r.choice(_PLACE)
    return s


def _t_weather(r: random.Random) -> str:
    first = r.choice(_WEATHER)
    second = r.choice([_t_transitive, _t_intransitive])(r)
    return f"{first} {r.choice(['when', 'so', 'and', 'but', 'while'])} {second}"


def _t_animal(r: random.Random) -> str:
    an = r.choice(_W["animal"])
    verb = r.choice(["chased", "followed", "watched", "found", "frightened", "woke", "ignored"])
    return (
        f"the {r.choice(_W['adj'])} {an} {verb} {_np(r)} "
        f"{r.choice(['all the way to', 'across', 'around', 'into'])} {r.choice(_PLACE)}"
    )


def _t_food(r: random.Random) -> str:
    who = _np(r)
    return (
        f"{who} {r.choice(['bought', 'cooked', 'ate', 'shared', 'sold', 'asked for'])} "
        f"{r.choice(_W['food'])} and {r.choice(_W['food'])} {r.choice(_TIME)}"
    )


def _t_feeling(r: random.Random) -> str:
    return f"{_np(r)} felt {r.choice(_W['feeling'])} {r.choice(_W['conj'])} {_t_transitive(r)}"


def _t_question(r: random.Random) -> str:
    wh = r.choice(["why did", "when did", "where did", "how did", "did"])
    verb = r.choice(["find", "carry", "open", "sell", "buy", "hide", "paint", "mend", "wash", "move"])
    return f"{wh} {_np(r)} {verb} {_obj(r)} {r.choice(_TIME)}"


def _t_speech(r: random.Random) -> str:
    said = r.choice(["said", "told us", "wrote", "explained", "promised", "remembered"])
    return f"{_np(r)} {said} that {_t_transitive(r)}"


def _t_count(r: random.Random) -> str:
    return (
        f"there were {r.choice(_W['number'])} {_plural(r.choice(_W['animal']))} "
        f"and {r.choice(_W['number'])} {r.choice(_W['adj'])} "
        f"{r.choice(['houses', 'trees', 'boats', 'carts', 'chairs', 'lamps'])} "
        f"{r.choice(['near', 'in', 'behind', 'beyond'])} {r.choice(_PLACE)}"
    )


def _t_instruction(r: random.Random) -> str:
    verb = r.choice(
        [
            "please bring",
            "do not forget",
            "try to find",
            "remember to wash",
            "you should open",
            "let us carry",
            "we must mend",
            "please put away",
        ]
    )
    when = r.choice(
        ["dinner", "lunch", "the evening", "the rain starts", "we leave", "it gets dark", "the guests arrive"]
    )
    return f"{verb} {_obj(r)} {r.choice(['before', 'after'])} {when}"


def _t_passive(r: random.Random) -> str:
    v = r.choice(_VERB_T)
    return f"{_obj(r)} was {v[1]} by {_np(r)} {r.choice(_TIME)}"


_TEMPLATES: Sequence[Callable[[random.Random], str]] = (
    _t_transitive,
    _t_transitive,
    _t_intransitive,
    _t_weather,
    _t_animal,
    _t_food,
    _t_feeling,
    _t_question,
    _t_speech,
    _t_count,
    _t_instruction,
    _t_passive,
)


def normalize_text(text: str) -> str:
    """Upper-case ``text`` and keep only ``A-Z``, apostrophes and single spaces."""
    out = []
    for ch in text.upper():
        out.append(ch if ch in ALPHABET else " ")
    return " ".join("".join(out).split())


def generate_sentences(n: int, seed: int = 0, min_words: int = 4, max_words: int = 24) -> List[str]:
    """Return ``n`` distinct sentences, deterministic for ``seed``.

    Args:
        n: number of sentences wanted (the grammar yields hundreds of thousands of distinct
            sentences; asking for more than about 200k raises ``RuntimeError``).
        seed: random seed; the same seed gives the same list.
        min_words: shortest sentence kept (in words).
        max_words: longest sentence kept (in words).

    Returns:
        A list of upper-case transcripts (``A-Z``, apostrophe, space).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    r = random.Random(seed)
    seen: set = set()
    out: List[str] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 20 * n + 1000:
            raise RuntimeError(f"the grammar could not produce {n} distinct sentences")
        s = normalize_text(r.choice(_TEMPLATES)(r))
        if not (min_words <= len(s.split()) <= max_words) or s in seen:
            continue
        seen.add(s)
        out.append(s)
    return out
