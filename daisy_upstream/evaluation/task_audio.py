"""The audio an s3prl task config's test split evaluates: what the upstream sees when the
runner evaluates it (for timing it, and for counting where its utterances exit)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, List, Mapping

from daisy_upstream.audio.io import read_scp
from daisy_upstream.integration.runner_io import TEST_SPLIT

__all__ = ["test_audio_files"]


def test_audio_files(task: str, config: Mapping[str, Any]) -> List[Path]:
    """The files the task's test split evaluates (what the upstream sees), from a task config."""
    expert = config["downstream_expert"]
    if task == "asr":
        datarc = expert["datarc"]
        files = []
        for name in datarc[TEST_SPLIT[task]]:
            with open(Path(datarc["bucket_file"]) / f"{name}.csv") as f:
                files += [Path(datarc["libri_root"]) / r["file_path"] for r in csv.DictReader(f)]
        return files
    if task == "voxceleb1":
        datarc = expert["datarc"]
        root = Path(datarc["file_path"])
        files = []
        for line in Path(datarc["meta_data"]).read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "3":
                found = sorted(root.glob(f"*/wav/{parts[1]}"))
                if not found:
                    raise FileNotFoundError(
                        f"{parts[1]} (test split of {datarc['meta_data']}) not found under {root}/*/wav"
                    )
                files.append(found[0])
        return files
    sub = "noisy" if task == "enhancement_stft" else "mix_clean"
    return list(read_scp(Path(expert["loaderrc"]["test_dir"]) / sub / "wav.scp").values())
