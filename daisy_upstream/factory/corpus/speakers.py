"""Deterministic pools of synthetic speakers.

A speaker is a :class:`~daisy_upstream.factory.corpus.tts.Voice`: an espeak-ng accent and variant
with a fixed pitch and rate, or a flite voice with a fixed F0 target and duration stretch.
Some espeak variants are held out from every speaker pool and used only for babble noise.
"""

from __future__ import annotations

import random
from typing import List, Sequence, Tuple

from .tts import ESPEAK_ACCENTS, FLITE_VOICES, Voice

__all__ = ["speaker_pool", "BABBLE_VARIANTS"]

#: espeak variants never used as speakers; their voices make the babble noise.
BABBLE_VARIANTS = ("m7", "f4", "klatt4", "Gene2", "steph3", "iven4", "edward2", "RicishayMax3")
# F0 target (Hz) ranges for flite voices: male voices lower, slt higher
_FLITE_F0 = {"kal16": (85, 140), "awb": (85, 140), "rms": (80, 135), "slt": (150, 230)}


def speaker_pool(
    n: int, variants: Sequence[str], seed: int, flite: bool = True, flite_share: float = 0.15
) -> Tuple[List[Voice], List[Voice]]:
    """Choose ``n`` distinct speakers and a list of babble voices.

    Args:
        n: number of speakers wanted.
        variants: espeak-ng variant names available (see :func:`tts.espeak_variants`).
        seed: random seed; same inputs give the same speakers in the same order.
        flite: include flite voices (about ``flite_share`` of the speakers).
        flite_share: fraction of flite speakers when ``flite`` is true.

    Returns:
        ``(speakers, babble_voices)``; speakers never use a babble variant.
    """
    if n <= 0:
        raise ValueError(f"need a positive number of speakers, got {n}")
    r = random.Random(seed)
    usable = sorted(v for v in variants if v not in BABBLE_VARIANTS)
    if not usable:
        raise RuntimeError("no espeak-ng voice variants available for speakers")
    n_flite = int(round(n * flite_share)) if flite else 0
    speakers: List[Voice] = []
    seen = set()
    # espeak: cycle through accent x variant combinations in a seeded order, so that many
    # distinct voices appear before any combination repeats (with a different pitch/rate)
    combos = [(a, v) for a in ESPEAK_ACCENTS for v in usable]
    r.shuffle(combos)
    i = 0
    while len(speakers) < n - n_flite:
        accent, var = combos[i % len(combos)]
        i += 1
        voice = Voice("espeak", f"{accent}+{var}", r.randrange(15, 86, 5), r.randrange(130, 196, 5))
        if voice.key not in seen:
            seen.add(voice.key)
            speakers.append(voice)
    while len(speakers) < n:
        name = FLITE_VOICES[len(speakers) % len(FLITE_VOICES)]
        lo, hi = _FLITE_F0[name]
        voice = Voice("flite", name, r.randrange(lo, hi + 1, 5), r.randrange(85, 126, 5))
        if voice.key not in seen:
            seen.add(voice.key)
            speakers.append(voice)
    r.shuffle(speakers)
    babble = [
        Voice("espeak", f"{ESPEAK_ACCENTS[k % len(ESPEAK_ACCENTS)]}+{v}", 30 + 5 * k, 160)
        for k, v in enumerate(BABBLE_VARIANTS)
        if v in variants
    ]
    if not babble:
        babble = [Voice("espeak", "en-us", 40 + 10 * k, 150 + 10 * k) for k in range(4)]
    return speakers, babble
