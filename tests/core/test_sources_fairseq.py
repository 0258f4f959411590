"""fairseq originals read without fairseq, against s3prl's stock upstream on the file s3prl's
converter would have written (the fixtures follow fairseq's own code: see
:mod:`daisy_upstream.testing.fairseq_files`)."""

from __future__ import annotations

import builtins
import sys

import pytest
import s3prl.hub as hub
import torch

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.core.checkpoint import read_checkpoint
from daisy_upstream.core.sources import RefusedPickle, read_source, source_format
from daisy_upstream.core.sources.pickled import pickle_globals
from daisy_upstream.integration import hubconf
from daisy_upstream.testing import make_random_family_checkpoint, waves
from daisy_upstream.testing.fairseq_files import CONFIG_CLASSES, write_fairseq_original

CASES = [
    ("hubert", "container"),
    ("hubert", "dictconfig"),
    ("hubert", "structured"),
    ("wav2vec2", "structured"),
    ("hubert", "args"),
    ("wav2vec2", "container"),
    ("wav2vec2", "args"),
    ("data2vec", "container"),
]


@pytest.mark.parametrize("family,cfg_form", CASES)
def test_fairseq_original_equals_stock_upstream_on_its_conversion(tmp_path, family, cfg_form):
    kwargs = dict(layer_norm_first=True, extractor_mode="layer_norm") if family == "wav2vec2" else {}
    converted = make_random_family_checkpoint(family, num_layers=2, branches=False, **kwargs)
    atomic_torch_save(converted, tmp_path / "converted.pt")
    original = write_fairseq_original(converted, tmp_path / "original.pt", cfg_form)
    assert "fairseq" not in sys.modules
    if family == "hubert" or cfg_form in (
        "dictconfig",
        "structured",
    ):  # fairseq / omegaconf classes: plain weights_only refuses
        with pytest.raises(Exception, match="Unsupported global"):
            torch.load(original, weights_only=True)
    if cfg_form == "structured":  # omegaconf's metadata names fairseq's config dataclass: a name, never built
        assert CONFIG_CLASSES[family] in pickle_globals(original)
    state = read_checkpoint(original, family)
    assert set(state["model_weight"]) == set(converted["model_weight"])
    for key, value in converted["model_weight"].items():
        if isinstance(value, dict):
            continue
        assert torch.equal(state["model_weight"][key], value), key
    if family == "hubert":
        assert state["dictionaries_symbols"] == converted["dictionaries_symbols"]
    stock = getattr(hub, f"{family}_local")(ckpt=str(tmp_path / "converted.pt")).eval()
    ours = getattr(hubconf, f"daisy_{family}_local")(str(original), model_config={"strategy": "full"}).eval()
    with torch.no_grad():
        for n in (16000, 7001):
            [wav] = waves(n, seed=n)
            expected = stock([wav])["hidden_states"]
            got = ours([wav])["hidden_states"]
            assert len(got) == len(expected) == 3
            for a, b in zip(got, expected):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


class _Writes:
    """Unpickled by a plain pickle, this opens (creates) the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_malicious_pickle_never_runs_and_fails_in_one_line(tmp_path):
    atomic_torch_save(
        {"model": {}, "cfg": {"model": {"_name": "hubert"}}, "x": _Writes(tmp_path / "m1")}, tmp_path / "a.pt"
    )
    torch.load(tmp_path / "a.pt", weights_only=False)  # the fixture is really malicious
    assert (tmp_path / "m1").exists()
    marker = tmp_path / "marker"
    atomic_torch_save({"model": {}, "payload": _Writes(marker)}, tmp_path / "evil.pt")
    for load in (read_source, read_checkpoint, lambda p: hubconf.daisy_hubert_local(str(p))):
        with pytest.raises(RefusedPickle) as error:
            load(tmp_path / "evil.pt")
        assert not marker.exists()
        assert "\n" not in str(error.value) and "names io.open" in str(error.value), str(error.value)


def test_allow_listed_names_cannot_be_called_into_code(tmp_path):
    """A stand-in's name called with arguments (REDUCE) builds nothing: refused in one line."""
    import pickle

    data = b"\x80\x02cfairseq.data.dictionary\nDictionary\nX\x03\x00\x00\x00abc\x85R."
    with pytest.raises(Exception):
        pickle.loads(data)  # not even fairseq's own class would take it
    path = tmp_path / "reduce.pt"
    path.write_bytes(data)
    with pytest.raises(RefusedPickle) as error:
        read_source(path)
    assert "\n" not in str(error.value)


def test_other_files_name_the_accepted_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RefusedPickle, match="not a readable torch checkpoint"):
        read_checkpoint(tmp_path / "notes.txt")
    atomic_torch_save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="accepted: .*fairseq original.*transformers folder") as error:
        read_checkpoint(tmp_path / "other.pt")
    assert "\n" not in str(error.value)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="without config.json"):
        read_checkpoint(tmp_path / "folder")


def test_fairseq_models_outside_the_families_are_refused(tmp_path):
    converted = make_random_family_checkpoint("wav2vec2", num_layers=1, branches=False)
    converted["model_cfg"]["_name"] = "wav2vec_ctc"
    write_fairseq_original(converted, tmp_path / "ctc.pt")
    with pytest.raises(ValueError, match="fairseq 'wav2vec_ctc' model"):
        read_checkpoint(tmp_path / "ctc.pt")


def test_reading_needs_neither_fairseq_nor_omegaconf_nor_transformers(tmp_path):
    """In a fresh interpreter: the DictConfig file is read into plain dicts without importing them."""
    import json
    import os
    import subprocess
    from pathlib import Path

    converted = make_random_family_checkpoint("hubert", num_layers=1, branches=False)
    write_fairseq_original(converted, tmp_path / "dictconfig.pt", "dictconfig")
    code = (
        "import json, sys\n"
        "from daisy_upstream.core.checkpoint import read_checkpoint\n"
        f"state = read_checkpoint({str(tmp_path / 'dictconfig.pt')!r})\n"
        "print(json.dumps([type(state['model_cfg']).__name__, state['model_cfg']['encoder_layers'],"
        " sorted(m for m in ('fairseq', 'omegaconf', 'transformers') if m in sys.modules)]))\n"
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["dict", 1, []]


def test_unilm_wavlm_file_is_read_as_its_release_format(tmp_path):
    """unilm's ``{cfg, model}`` (flat cfg; wavlm/expert.py:37-40) has ``cfg`` and ``model`` like
    a fairseq file but no nested ``cfg.model``: read as it is (its equality with the stock
    ``wavlm_local`` is tests/core/test_families.py's)."""
    state = make_random_family_checkpoint("wavlm", num_layers=1, branches=False)
    atomic_torch_save(state, tmp_path / "WavLM-Base+.pt")
    got = read_checkpoint(tmp_path / "WavLM-Base+.pt", "wavlm")
    assert got.keys() == state.keys() == {"cfg", "model"}
    assert got["cfg"] == state["cfg"] and source_format(got) == "s3prl"
    with pytest.raises(ValueError, match="is a wavlm checkpoint.*use -u daisy_wavlm_local"):
        read_checkpoint(tmp_path / "WavLM-Base+.pt", "hubert")
