"""LibriSpeech-like layout for s3prl's ``asr`` task.

``<root>/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac`` with LibriSpeech's
text files (:mod:`daisy_upstream.audio.librispeech`: transcripts and bucket CSVs) and a
fairseq-format ``<root>/char.dict`` (28 symbols: ``|``, A-Z and the apostrophe).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List

from daisy_upstream.atomic import atomic_write_text as write_text
from daisy_upstream.audio.librispeech import LibriUtterance, write_librispeech_text

from .plan import ASR_SPLITS, Utterance
from .text import ALPHABET

__all__ = ["write_asr_metadata", "char_dict_text"]


def char_dict_text(transcripts: Iterable[str]) -> str:
    """fairseq dictionary text (``symbol count`` lines, most frequent first) for the
    word separator ``|``, A-Z and the apostrophe; every symbol is listed (count >= 1)."""
    counts: Counter = Counter()
    for t in transcripts:
        counts.update(t.replace(" ", "|"))
        counts["|"] += 1
    symbols = ["|"] + list(ALPHABET)
    rows = sorted(symbols, key=lambda s: (-counts[s], symbols.index(s)))
    return "".join(f"{s} {max(1, counts[s])}\n" for s in rows)


def write_asr_metadata(root: Path, utts: List[Utterance], lengths: Dict[str, int]) -> None:
    """Write ``.trans.txt`` files, bucket CSVs (:mod:`daisy_upstream.audio.librispeech`) and
    ``char.dict`` under ``root``.

    Args:
        root: the ASR task root (holds ``LibriSpeech/``).
        utts: all planned utterances (audio already written).
        lengths: utterance id -> number of samples.
    """
    write_librispeech_text(
        root,
        (LibriUtterance(ASR_SPLITS[u.split], u.utt_id, u.rel_path, lengths[u.utt_id], u.transcript) for u in utts),
        splits=ASR_SPLITS.values(),
    )
    write_text(root / "char.dict", char_dict_text(u.transcript for u in utts if u.split == "train"))
