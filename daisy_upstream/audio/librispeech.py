"""LibriSpeech's text files, as s3prl's ``asr`` dataset reads them (``s3prl/downstream/asr/dataset.py``).

Below ``root``: one ``LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt`` per
chapter (``<utterance id> <TRANSCRIPT>`` lines, sorted) and one
``len_for_bucket/<split>.csv`` per split with the columns ``idx,file_path,length,label``
(``file_path`` below the LibriSpeech root, ``length`` in samples, longest first), the columns
of s3prl's ``preprocess/generate_len_for_bucket.py``. The audio itself is the caller's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Tuple

from daisy_upstream.atomic import atomic_write_text

__all__ = ["LibriUtterance", "write_librispeech_text"]


class LibriUtterance(NamedTuple):
    """One utterance: its split folder, ``<spk>-<chapter>-<n>`` id, path below the LibriSpeech
    root, length in samples and transcript."""

    split: str
    utt_id: str
    rel_path: str
    num_samples: int
    transcript: str


def write_librispeech_text(
    root: Path, utterances: Iterable[LibriUtterance], splits: Iterable[str] = ()
) -> Dict[str, str]:
    """Write the transcripts and bucket CSVs of ``utterances`` below ``root`` (atomically).

    ``splits``: split folders that get a CSV even without utterances.

    Returns:
        ``{"libri_root", "bucket_file"}``: the ``datarc`` paths of s3prl's asr config.

    Raises:
        ValueError: an utterance id that is not ``<spk>-<chapter>-<n>``.
    """
    root = Path(root)
    libri, buckets = root / "LibriSpeech", root / "len_for_bucket"
    chapters: Dict[Tuple[str, str, str], List[LibriUtterance]] = {}
    by_split: Dict[str, List[LibriUtterance]] = {split: [] for split in splits}
    for u in utterances:
        parts = u.utt_id.split("-")
        if len(parts) != 3:
            raise ValueError(f"utterance id {u.utt_id!r} is not LibriSpeech-style <spk>-<chapter>-<n>")
        chapters.setdefault((u.split, parts[0], parts[1]), []).append(u)
        by_split.setdefault(u.split, []).append(u)
    for (split, spk, ch), us in sorted(chapters.items()):
        lines = "".join(f"{u.utt_id} {u.transcript}\n" for u in sorted(us, key=lambda u: u.utt_id))
        atomic_write_text(libri / split / spk / ch / f"{spk}-{ch}.trans.txt", lines)
    for split, us in by_split.items():
        rows = sorted(us, key=lambda u: -u.num_samples)
        atomic_write_text(
            buckets / f"{split}.csv",
            "idx,file_path,length,label\n"
            + "".join(f"{i},{u.rel_path},{u.num_samples},{u.transcript}\n" for i, u in enumerate(rows)),
        )
    return {"libri_root": str(libri), "bucket_file": str(buckets)}
