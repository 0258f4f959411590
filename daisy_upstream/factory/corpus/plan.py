"""The corpus plan: which speaker says which sentences, in which split.

Planning is pure Python and deterministic for a seed; synthesis follows the plan. Speakers
are split disjointly into train/dev/test (LibriSpeech style), and every utterance has its
own sentences, so held-out data has unseen voices and unseen sentences.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Dict, List

from .speakers import speaker_pool
from .text import generate_sentences
from .tts import Voice

__all__ = ["Utterance", "CorpusPlan", "plan_corpus", "ASR_SPLITS", "SECONDS_PER_WORD"]

#: LibriSpeech split names used for train / dev / test.
ASR_SPLITS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
#: Measured mean speech duration per word of the synthetic voices (used only for planning).
SECONDS_PER_WORD = 0.336


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One planned utterance.

    Attributes:
        utt_id: LibriSpeech-style id ``<speaker>-<chapter>-<nnnn>``.
        split: ``"train"``, ``"dev"`` or ``"test"``.
        speaker: index into :attr:`CorpusPlan.speakers`.
        chapter: LibriSpeech-style chapter number.
        transcript: upper-case transcript.
        tts_text: text given to the TTS engine (sentences separated by full stops).
    """

    utt_id: str
    split: str
    speaker: int
    chapter: int
    transcript: str
    tts_text: str

    @property
    def rel_path(self) -> str:
        """Path of the FLAC file below the LibriSpeech root."""
        spk, ch, _ = self.utt_id.split("-")
        return f"{ASR_SPLITS[self.split]}/{spk}/{ch}/{self.utt_id}.flac"


@dataclasses.dataclass
class CorpusPlan:
    """Speakers, babble voices and utterances of a corpus."""

    speakers: List[Voice]
    speaker_split: List[str]
    babble_voices: List[Voice]
    utterances: List[Utterance]

    def by_split(self, split: str) -> List[Utterance]:
        return [u for u in self.utterances if u.split == split]


def default_num_speakers(hours: float) -> int:
    """Default speaker count for a corpus of ``hours`` hours: ``max(10, 50*sqrt(hours))``."""
    return int(min(1251, max(10, round(50 * math.sqrt(hours)))))


def plan_corpus(
    hours: float,
    seed: int,
    variants: List[str],
    num_speakers: int = 0,
    flite: bool = True,
    dev_share: float = 0.1,
    test_share: float = 0.1,
) -> CorpusPlan:
    """Plan a corpus of about ``hours`` hours of speech.

    Args:
        hours: target amount of speech (estimated from word counts; the real amount is
            measured after synthesis).
        seed: random seed.
        variants: espeak-ng variants available here.
        num_speakers: number of speakers (0: :func:`default_num_speakers`).
        flite: include flite voices.
        dev_share: fraction of speakers in the dev split (at least 2 speakers).
        test_share: fraction of speakers in the test split (at least 2 speakers).
    """
    if not hours > 0:
        raise ValueError(f"hours must be positive, got {hours}")
    n_spk = num_speakers or default_num_speakers(hours)
    if n_spk < 6:
        raise ValueError(f"need at least 6 speakers (2 per split), got {n_spk}")
    if n_spk > 1251:
        raise ValueError(f"at most 1251 speakers fit VoxCeleb1's id range, got {n_spk}")
    speakers, babble = speaker_pool(n_spk, variants, seed, flite=flite)
    n_dev = max(2, round(n_spk * dev_share))
    n_test = max(2, round(n_spk * test_share))
    split_of = ["test"] * n_test + ["dev"] * n_dev + ["train"] * (n_spk - n_dev - n_test)

    r = random.Random(seed + 1)
    per_spk = hours * 3600.0 / n_spk
    sentences = iter(generate_sentences(int(hours * 3600 / (9.5 * SECONDS_PER_WORD) * 1.3) + 200, seed=seed + 2))
    utts: List[Utterance] = []
    for s in range(n_spk):
        spk_id = 100 + s
        chapter = 1000 + 10 * s
        said = 0.0
        n = 0
        while said < per_spk:
            k = r.choice((1, 1, 2, 2, 3))
            sents = [next(sentences) for _ in range(k)]
            said += sum(len(x.split()) for x in sents) * SECONDS_PER_WORD + 0.3 * k
            if n and n % 12 == 0:
                chapter += 1
            utts.append(
                Utterance(
                    utt_id=f"{spk_id}-{chapter}-{n:04d}",
                    split=split_of[s],
                    speaker=s,
                    chapter=chapter,
                    transcript=" ".join(sents),
                    tts_text=". ".join(x.lower() for x in sents) + ".",
                )
            )
            n += 1
    return CorpusPlan(speakers=speakers, speaker_split=split_of, babble_voices=babble, utterances=utts)


def plan_summary(plan: CorpusPlan) -> Dict[str, int]:
    """Counts of speakers and utterances per split."""
    out: Dict[str, int] = {}
    for split in ("train", "dev", "test"):
        out[f"{split}_speakers"] = plan.speaker_split.count(split)
        out[f"{split}_utterances"] = len(plan.by_split(split))
    return out
