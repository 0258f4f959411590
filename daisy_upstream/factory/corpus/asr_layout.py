"""LibriSpeech-like layout for s3prl's ``asr`` task.

``<root>/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac`` with one
``<spk>-<chapter>.trans.txt`` per chapter, ``<root>/len_for_bucket/<split>.csv``
(columns ``file_path`` relative to the LibriSpeech root and ``length`` in samples), and a
fairseq-format ``<root>/char.dict`` (28 symbols: ``|``, A-Z and the apostrophe).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

from daisy_upstream.atomic import atomic_write_text as write_text
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
    """Write ``.trans.txt`` files, bucket CSVs and ``char.dict`` under ``root``.

    Args:
        root: the ASR task root (holds ``LibriSpeech/``).
        utts: all planned utterances (audio already written).
        lengths: utterance id -> number of samples.
    """
    libri = root / "LibriSpeech"
    chapters: Dict[Tuple[str, str], List[Utterance]] = defaultdict(list)
    for u in utts:
        chapters[(u.split, u.utt_id.rsplit("-", 1)[0])].append(u)
    for (split, spk_ch), us in sorted(chapters.items()):
        spk, ch = spk_ch.split("-")
        lines = "".join(f"{u.utt_id} {u.transcript}\n" for u in sorted(us, key=lambda x: x.utt_id))
        write_text(libri / ASR_SPLITS[split] / spk / ch / f"{spk_ch}.trans.txt", lines)
    for split, name in ASR_SPLITS.items():
        rows = sorted((u for u in utts if u.split == split), key=lambda u: -lengths[u.utt_id])
        csv = "idx,file_path,length,label\n" + "".join(
            f"{i},{u.rel_path},{lengths[u.utt_id]},{u.transcript}\n" for i, u in enumerate(rows))
        write_text(root / "len_for_bucket" / f"{name}.csv", csv)
    write_text(root / "char.dict", char_dict_text(u.transcript for u in utts if u.split == "train"))
