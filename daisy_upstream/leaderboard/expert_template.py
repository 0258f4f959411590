"""The text of the ``expert.py`` that ``daisy export-hidden`` writes (SUPERB hidden set).

The organizers import it from the submission folder and call ``UpstreamExpert(ckpt="model.pt")``;
everything it needs is in ``model.pt``: the model in its s3prl format (any family), the DAISY branches and
calibration, and a ``daisy_export`` entry with the upstream config (``layers_past_exit: copy``,
so their stock featurizer's weighted sum sees each utterance's exit state in the layers it
skipped) and the exit statistics of downstream training, if any.
"""

__all__ = ["EXPORT_KEY", "EXPERT_PY"]

#: top-level key of model.pt holding {"upstream_config", "exit_counts", "source_checkpoint", ...}
EXPORT_KEY = "daisy_export"

EXPERT_PY = '''"""DAISY early-exit SSL model as a SUPERB hidden-set upstream (written by ``daisy export-hidden``).

Needs the ``daisy_upstream`` package (see requirements.txt). ``model.pt`` holds the model, the
upstream config and the exit statistics; it is read with ``torch.load(weights_only=True)``.
Forward: a list of 1-D 16 kHz float waveforms -> ``hidden_states``, ``L + 1`` tensors
``(B, T, D)``; past each utterance's exit layer they repeat its exit-layer state.
"""
from pathlib import Path
from typing import Any, Dict, List

import torch
from torch import Tensor

from daisy_upstream.core.expert import DaisyUpstream

EXPORT_KEY = "{export_key}"


def _resolve(ckpt) -> str:
    path = Path(ckpt)
    if not path.is_file() and not path.is_absolute():
        path = Path(__file__).resolve().parent / path  # beside this file
    return str(path)


class UpstreamExpert(DaisyUpstream):
    """``UpstreamExpert(ckpt="model.pt")``; a ``model_config`` (YAML path or mapping) or
    upstream-config keyword arguments replace the baked-in config keys they name."""

    def __init__(self, ckpt: str = "model.pt", model_config: Any = None, **kwargs):
        ckpt = _resolve(ckpt)
        export = torch.load(ckpt, map_location="cpu", weights_only=True).get(EXPORT_KEY) or {{}}
        config = dict(export.get("upstream_config") or {{}})
        if isinstance(model_config, dict):
            config.update(model_config)
        elif model_config:
            import yaml

            with open(model_config) as f:
                config.update(yaml.safe_load(f) or {{}})
        super().__init__(ckpt, model_config=config, **kwargs)
        if export.get("exit_counts") is not None:
            self.set_exit_statistics(export["exit_counts"])

    def forward(self, wavs: List[Tensor]) -> Dict[str, Any]:
        out = super().forward(wavs)
        return {{"hidden_states": out["hidden_states"], "last_hidden_state": out["last_hidden_state"]}}
'''.format(export_key=EXPORT_KEY)
