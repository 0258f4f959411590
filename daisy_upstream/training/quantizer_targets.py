"""wav2vec 2.0's stage-1 targets: its quantizer's codebook, read at the last layer or at the input.

wav2vec 2.0 keeps its pretraining quantizer (s3prl's ``GumbelVectorQuantizer``: ``G`` codebook
groups of ``V`` entries; a codeword is one entry per group, ``V^G`` of them). Two targets, each one
code per group for every frame:

* ``--targets model`` (the default, :class:`ContrastiveTargets`): the model's own contrastive
  prediction at its **last** layer. Pretraining scores a frame's context vector
  ``final_proj(h^L_t)`` against candidate quantized vectors ``project_q(q)`` by cosine similarity
  / ``logit_temp`` (``Wav2Vec2Model.compute_preds``); the target is the codeword of the whole
  codebook (``quantizer.codebook()``, every combination of one entry per group) that scores
  highest, split into its ``G`` per-group codes. Like HuBERT's targets (the argmax of the last
  layer's cluster prediction) it is what the full model says about the frame, so deeper layers
  predict it better and branch entropy falls with depth (docs/training.md, "The premise").
* ``--targets quantizer`` (:class:`QuantizerTargets`): the quantizer's code of the *unmasked
  input*, ``argmax_v`` of the quantizer's logits per group computed by s3prl's own
  ``Wav2Vec2Model.quantize`` (CNN -> ``layer_norm`` -> ``quantizer.forward_idx``; eval mode, the
  hard argmax) on each unmasked, unpadded utterance. It is a function of the CNN features, so the
  *earliest* layers predict it best: entropy tends to rise with depth and every utterance exits at
  layer 1. Kept for comparison, not for exits.

A branch has ``G`` output blocks of ``V`` classes (``ExitBranches(groups=G)``), trained with the
mean of the ``G`` cross-entropies; its exit entropy is the mean over groups of each block's
entropy (:func:`daisy_upstream.core.branches.group_entropy`). Waveforms are normalised when the
task says so, as the stock upstream does.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ContrastiveTargets", "QuantizerTargets"]

#: the most codewords (V^G) scored per frame; wav2vec 2.0 Base and Large have 320^2 = 102400
MAX_CODEWORDS = 1 << 21
#: frames scored against the whole codebook at once (bounds the (frames, V^G) logits)
FRAME_CHUNK = 256


def _quantizer_of(model: nn.Module) -> nn.Module:
    quantizer = getattr(model, "quantizer", None)
    if quantizer is None:
        raise ValueError(
            "this wav2vec 2.0 checkpoint has no quantizer (quantize_targets off, or fine-tuned): "
            "use --targets kmeans --kmeans-layer K --clusters N"
        )
    return quantizer


class QuantizerTargets(nn.Module):
    """Per-group quantizer codes of a frozen s3prl ``Wav2Vec2Model``.

    Args:
        model: s3prl's ``Wav2Vec2Model`` with its ``quantizer`` (in eval mode).
        normalize: per-utterance waveform ``layer_norm`` first (``task_cfg.normalize``).

    Raises:
        ValueError: the model has no quantizer.
    """

    kind = "quantizer"

    def __init__(self, model: nn.Module, normalize: bool = False) -> None:
        super().__init__()
        quantizer = _quantizer_of(model)
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


class ContrastiveTargets(nn.Module):
    """Per-group codes of the codeword a frozen s3prl ``Wav2Vec2Model`` predicts at its last layer.

    Frame ``t``'s target is the codeword ``q`` of ``quantizer.codebook()`` maximising
    ``cos(final_proj(h^L_t), project_q(q))`` (``target_glu`` applied to the candidates when the
    model has one, as pretraining does), written as one code per group.

    Args:
        model: s3prl's ``Wav2Vec2Model`` with ``quantizer``, ``project_q`` and ``final_proj``.

    Raises:
        ValueError: no quantizer, or a codebook of more than :data:`MAX_CODEWORDS` codewords.
    """

    kind = "model"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        quantizer = _quantizer_of(model)
        if getattr(model, "final_proj", None) is None or getattr(model, "project_q", None) is None:
            raise ValueError(
                "this wav2vec 2.0 checkpoint has no final_proj/project_q (fine-tuned): use --targets kmeans"
            )
        self.groups = int(quantizer.groups)
        self.num_classes = int(quantizer.num_vars)
        if self.num_classes**self.groups > MAX_CODEWORDS:
            raise ValueError(
                f"{self.num_classes}^{self.groups} codewords are too many to score every frame against: "
                "use --targets kmeans"
            )
        self._model = [model]  # not a submodule: its parameters stay out of this module's
        self._candidates: Optional[Tensor] = None

    def candidates(self) -> Tensor:
        """``(V^G, final_dim)`` unit vectors: every codeword through ``project_q`` (and ``target_glu``)."""
        model = self._model[0]
        if self._candidates is None or self._candidates.device != model.final_proj.weight.device:
            with torch.no_grad():
                projected = model.project_q(model.quantizer.codebook())
                if getattr(model, "target_glu", None) is not None:
                    projected = model.target_glu(projected)
                self._candidates = F.normalize(projected.float(), dim=-1, eps=1e-8)
        return self._candidates

    def codeword(self, hidden: Tensor) -> Tensor:
        """``(N, D)`` last-layer states -> ``(N,)`` index of the best codeword (``codebook()`` row)."""
        candidates = self.candidates()
        with torch.no_grad():
            out = []
            for chunk in hidden.split(FRAME_CHUNK):
                context = F.normalize(self._model[0].final_proj(chunk).float(), dim=-1, eps=1e-8)
                out.append((context @ candidates.t()).argmax(dim=-1))
        return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.long)

    def labels(self, features: Tensor, wavs: List[Tensor], lengths: Tensor) -> Tensor:
        """``features (L, N, D)`` -> ``(N, G)``: per group the code of the last layer's best codeword.

        ``codebook()`` lists codewords in ``itertools.product`` order, so row ``j`` holds the entry
        ``(j // V^(G-1-g)) % V`` of group ``g``."""
        index = self.codeword(features[-1])
        powers = [self.num_classes ** (self.groups - 1 - g) for g in range(self.groups)]
        return torch.stack([(index // p) % self.num_classes for p in powers], dim=-1)

    def record(self) -> Dict[str, Any]:
        """``daisy.targets`` for these branches."""
        return {
            "kind": self.kind,
            "source": "wav2vec 2.0 contrastive prediction at the last layer: the codeword whose project_q "
            "vector has the highest cosine with final_proj(h^L), one code per codebook group",
            "groups": self.groups,
            "codes_per_group": self.num_classes,
        }
