"""wav2vec 2.0's stage-1 targets (``--targets model``): its quantizer's code per codebook group.

wav2vec 2.0 keeps its pretraining quantizer (s3prl's ``GumbelVectorQuantizer``: ``G``
codebook groups of ``V`` entries). In pretraining its contrastive task picks, for each masked
frame, the quantized *unmasked* CNN features. The target of frame ``t`` here is that code:
for each group ``g`` the index ``argmax_v`` of the quantizer's logits, computed by s3prl's
own ``Wav2Vec2Model.quantize`` (CNN -> ``layer_norm`` -> ``quantizer.forward_idx``; eval
mode, so the hard argmax and never a Gumbel sample) on each unmasked, unpadded utterance
(waveform-normalised when the task says so, as the stock upstream does).

A branch then has ``G`` output blocks of ``V`` classes (``ExitBranches(groups=G)``), trained
with the mean of the ``G`` cross-entropies; its exit entropy is the mean over groups of each
block's entropy (:func:`daisy_upstream.core.branches.group_entropy`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["QuantizerTargets"]


class QuantizerTargets(nn.Module):
    """Per-group quantizer codes of a frozen s3prl ``Wav2Vec2Model``.

    Args:
        model: s3prl's ``Wav2Vec2Model`` with its ``quantizer`` (in eval mode).
        normalize: per-utterance waveform ``layer_norm`` first (``task_cfg.normalize``).

    Raises:
        ValueError: the model has no quantizer.
    """

    kind = "model"

    def __init__(self, model: nn.Module, normalize: bool = False) -> None:
        super().__init__()
        quantizer = getattr(model, "quantizer", None)
        if quantizer is None:
            raise ValueError(
                "this wav2vec 2.0 checkpoint has no quantizer (quantize_targets off, or fine-tuned): "
                "use --targets kmeans --kmeans-layer K --clusters N"
            )
        self._model = [model]  # not a submodule: its parameters stay out of this module's
        self.groups = int(quantizer.groups)
        self.num_classes = int(quantizer.num_vars)
        self.normalize = normalize

    def codes(self, wavs: List[Tensor]) -> List[Tensor]:
        """Each utterance's ``(T_i, G)`` codes (equal lengths run as one batch)."""
        model = self._model[0]
        if model.quantizer.training:
            raise ValueError("the quantizer is in train mode (it would draw Gumbel samples): call model.eval()")
        groups: Dict[int, List[int]] = defaultdict(list)
        for i, wav in enumerate(wavs):
            groups[len(wav)].append(i)
        out: List[Tensor] = [torch.empty(0)] * len(wavs)
        with torch.no_grad():
            for rows in groups.values():
                batch = torch.stack([wavs[i] for i in rows])
                if self.normalize:
                    batch = F.layer_norm(batch, batch.shape[-1:])
                _, codes = model.quantize(batch)  # (B, T, G) per-group indices in [0, V)
                for j, i in enumerate(rows):
                    out[i] = codes[j]
        return out

    def labels(self, features: Tensor, wavs: List[Tensor], lengths: Tensor) -> Tensor:
        """``(N, G)`` codes of the valid frames, rows in the order of ``features``' frames."""
        rows = []
        for codes, n in zip(self.codes(wavs), lengths.tolist()):
            if codes.size(0) < n:
                raise ValueError(
                    f"the quantizer gave {codes.size(0)} frames for an utterance with {n} valid hidden-state frames"
                )
            rows.append(codes[:n])
        return torch.cat(rows).to(features.device)

    def record(self) -> Dict[str, Any]:
        """``daisy.targets`` for these branches."""
        return {
            "kind": self.kind,
            "source": "wav2vec 2.0 quantizer code per codebook group (unmasked input)",
            "groups": self.groups,
            "codes_per_group": self.num_classes,
        }
