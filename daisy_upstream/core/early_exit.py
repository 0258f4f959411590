"""The early-exit forward of a frozen s3prl SSL model with per-utterance exits.

One loop for every family (HuBERT, wav2vec 2.0, data2vec, WavLM); what differs between them
is asked of the family's adapter (:mod:`daisy_upstream.core.families`).

Shapes: ``B`` utterances, ``T`` frames (50 Hz), ``D`` model width, ``L`` transformer layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daisy_upstream.core.branches import BRANCH_INPUTS, ExitBranches, check_branches_fit, valid_frame_mask
from daisy_upstream.core.exit_rows import ExitRows, LoopState
from daisy_upstream.core.families import Family, family_of_model
from daisy_upstream.core.graphs import GRAPH_MODES
from daisy_upstream.core.padded_cnn import chunked_padded_cnn, per_length_cnn, supports_padded_cnn
from daisy_upstream.core.policy import ExitPlan, exits, make_plan
from daisy_upstream.core.precision import CastCache, check_precision, frozen_forward
from daisy_upstream.core.static_loop import StaticPath, make_net
from daisy_upstream.core.waveforms import check_finite, prepare_waveforms

__all__ = ["GRAPH_PATHS", "EarlyExitModel", "EarlyExitOutput"]


@dataclass
class EarlyExitOutput:
    """Result of :meth:`EarlyExitModel.forward`.

    Attributes:
        hidden_states: ``L + 1`` tensors ``(B, T, D)`` with the meaning of s3prl's stock
            upstream of the family (``hubert_local``, ``wav2vec2_local``, ...); zeros past a row's exit layer and past its valid frames.
        lengths: ``(B,)`` valid frames per utterance.
        exit_layers: ``(B,)`` the layer (1..L) each utterance stopped at.
        entropies: ``(B, L)`` mean branch entropy per checked layer, NaN where unchecked.
        branch_inputs: only when asked for (``forward(..., branch_input=...)``): ``L``
            tensors ``(B, T, D)``, ``branch_inputs[k-1]`` being what a branch with that
            input takes at layer ``k``; zeros past a row's exit layer.
        exit_hidden: ``(B, T, D)`` each row's hidden state at its exit layer, gathered as rows
            leave (None: :meth:`exit_states` picks it from ``hidden_states``).
    """

    hidden_states: List[Tensor]
    lengths: Tensor
    exit_layers: Tensor
    entropies: Tensor
    branch_inputs: Optional[List[Tensor]] = None
    exit_hidden: Optional[Tensor] = None

    def exit_states(self) -> Tensor:
        """``(B, T, D)``: each utterance's hidden state at its own exit layer."""
        if self.exit_hidden is not None:
            return self.exit_hidden
        stacked = torch.stack(self.hidden_states, dim=0)  # (L+1, B, T, D)
        rows = torch.arange(stacked.size(1), device=stacked.device)
        return stacked[self.exit_layers.to(stacked.device), rows]


#: ``EarlyExitModel(cnn_pass=...)``: how a GroupNorm front end runs a mixed-length batch
CNN_PASSES = ("auto", "padded", "per-length")
#: ``EarlyExitModel(cuda_graphs=...)``: the config's :data:`~daisy_upstream.core.graphs.GRAPH_MODES`
#: and ``static``: the static-shape loop run eagerly on any device (the graphed path's reference)
GRAPH_PATHS = GRAPH_MODES + ("static",)


def _zero_frames(x: Tensor, padding: Tensor) -> Tensor:
    """``x`` ``(B, T, D)`` with zeros where ``padding`` ``(B, T)``; in place under no_grad."""
    if torch.is_grad_enabled():
        return x.masked_fill(padding.unsqueeze(-1), 0.0)
    return x.masked_fill_(padding.unsqueeze(-1), 0.0)


class EarlyExitModel(nn.Module):
    """Runs a frozen s3prl SSL model layer by layer; rows that exit leave the batch.

    Branch ``k`` is evaluated on the tensor its ``branches.branch_input`` names: ``hidden_states[k]``,
    layer ``k``'s output, or its FFN output (the output of ``fc2``, which s3prl's
    ``TransformerSentenceEncoderLayer`` also returns as ``layer_result``: nothing extra is
    computed for any reading; WavLM's layers do not return it).

    Args:
        model: s3prl's ``HubertModel``, ``Wav2Vec2Model``, ``Data2VecAudioModel`` or ``WavLM``
            (frozen; used as is, never modified).
        branches: one branch per layer, or None (only plans without checked layers run).
        normalize_waveform: per-utterance ``layer_norm`` of the waveform (the stock flag:
            ``task_cfg.normalize``, WavLM's ``cfg.normalize``).
        stock_padded_cnn: run the CNN on the zero-padded batch like s3prl's stock upstream (the
            family's own rule for padded frames). By default each utterance's CNN sees only its own
            samples, so its features do not depend on its batch-mates (a GroupNorm over time).
        cnn_pass: how a GroupNorm front end runs on a mixed-length batch (each row's own features
            either way, <= 1e-5): ``padded`` (one pass whose GroupNorm counts each row's valid
            frames, :mod:`daisy_upstream.core.padded_cnn`), ``per-length`` (one call per distinct
            length; always so for an extractor that is not s3prl's plain stack of conv blocks) or
            ``auto`` (default: per-length on CPU, measured 20% faster at batch 32; padded elsewhere).
        family: the model's adapter (default: from the model's class).
        cuda_graphs: ``auto`` (default): on CUDA without gradients, a batch that fits the buckets
            of :mod:`daisy_upstream.core.buckets` runs the static-shape loop
            (:mod:`daisy_upstream.core.static_loop`) whose per-layer steps are CUDA graphs,
            captured once per shape; ``off``: always the plain loop; ``static``: the static-shape
            loop without capture, on any device (its reference, for tests and CPU benches).
            Not for ``per_batch`` or ``branch_input`` forwards, nor ``stock_padded_cnn``.
        read_ahead: in the static-shape loop, read a check's decisions after the next layer's
            step is queued (a row that exits runs one more layer, masked) rather than at once.
        precision: the forward's arithmetic, ``fp32``, ``bf16`` or ``fp16`` autocast, or
            ``bf16-weights`` (a copy of the model cast once, :mod:`daisy_upstream.core.precision`);
            hidden states leave it in the model's own dtype (float32), entropies in float32.
    """

    def __init__(
        self,
        model: nn.Module,
        branches: Optional[ExitBranches],
        normalize_waveform: bool = False,
        stock_padded_cnn: bool = False,
        family: Optional[Family] = None,
        precision: str = "fp32",
        cnn_pass: str = "auto",
        cuda_graphs: str = "auto",
        read_ahead: bool = True,
    ) -> None:
        super().__init__()
        check_precision(precision)
        if cnn_pass not in CNN_PASSES:
            raise ValueError(f"cnn_pass {cnn_pass!r}: choose one of {', '.join(CNN_PASSES)}")
        if cuda_graphs not in GRAPH_PATHS:
            raise ValueError(f"cuda_graphs {cuda_graphs!r}: choose one of {', '.join(GRAPH_PATHS)}")
        self.cuda_graphs, self.read_ahead = cuda_graphs, read_ahead
        self._static = StaticPath()
        self._cast = CastCache()
        self.cnn_pass = cnn_pass
        self.precision = precision
        self.model = model
        self.family = family if family is not None else family_of_model(model)
        self.branches = branches
        self.normalize_waveform = normalize_waveform
        self.stock_padded_cnn = stock_padded_cnn
        self._conv_layers = [
            (m.kernel_size[0], m.stride[0]) for m in model.feature_extractor.modules() if isinstance(m, nn.Conv1d)
        ]
        self._cnn_has_groupnorm = any(isinstance(m, nn.GroupNorm) for m in model.feature_extractor.modules())
        self._cnn_per_row = self._cnn_has_groupnorm and not supports_padded_cnn(model.feature_extractor)
        if branches is not None:
            check_branches_fit(branches, self.num_layers)
        if branches is not None and branches.branch_input == "ffn_output" and not self.family.exposes_ffn_output:
            raise ValueError(f"branches read the FFN output, which {self.family.name} layers do not return")

    @property
    def num_layers(self) -> int:
        return len(self.model.encoder.layers)

    @property
    def embed_dim(self) -> int:
        return self.model.encoder.embedding_dim

    @property
    def downsample_rate(self) -> int:
        return math.prod(s for _, s in self._conv_layers)

    @property
    def min_samples(self) -> int:
        """The CNN's receptive field: the fewest samples that give one frame."""
        field, jump = 1, 1
        for kernel, stride in self._conv_layers:
            field += (kernel - 1) * jump
            jump *= stride
        return field

    def frame_counts(self, num_samples: Sequence[int]) -> List[int]:
        """Sample counts -> CNN output frames, on the host."""
        counts = list(num_samples)
        for kernel, stride in self._conv_layers:
            counts = [(n - kernel) // stride + 1 for n in counts]
        return counts

    def frame_lengths(self, num_samples: Tensor) -> Tensor:
        """``(B,)`` sample counts -> ``(B,)`` CNN output frames."""
        lengths = num_samples.clone()
        for kernel, stride in self._conv_layers:
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths

    def cnn_features(self, wavs: List[Tensor]) -> Tuple[Tensor, Tensor]:
        """CNN features after ``model.layer_norm`` ``(B, T, C)`` and valid frames ``(B,)``.

        ``wavs`` as the model takes them (already normalised where the family does). Zeros
        past each row's valid frames unless ``stock_padded_cnn``. This is what wav2vec 2.0's
        quantizer reads (its ``unmasked_features``).
        """
        features, counts = self._cnn(wavs)
        return features, torch.tensor(counts, device=features.device)

    def _cnn(self, wavs: List[Tensor], model: Optional[nn.Module] = None) -> Tuple[Tensor, List[int]]:
        """``cnn_features`` with the valid frames as host ints (no host sync unless stock)."""
        family, model = self.family, self.model if model is None else model
        sizes = [len(w) for w in wavs]
        per_length = self._cnn_per_row or (
            self._cnn_has_groupnorm
            and not self.stock_padded_cnn
            and (self.cnn_pass == "per-length" or (self.cnn_pass == "auto" and wavs[0].device.type == "cpu"))
        )
        cnn = lambda wav, samples=None: family.cnn(model, wav, samples)  # noqa: E731
        if per_length:  # equal lengths batched, one call per distinct length
            counts = self.frame_counts(sizes)
            return per_length_cnn(cnn, wavs, counts), counts
        padded = nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        if self.stock_padded_cnn:  # the family's own rule for which frames are padding
            features = cnn(padded)
            num_samples = torch.tensor(sizes, device=padded.device)
            frame_pad = family.frame_padding(model, features, ~valid_frame_mask(num_samples, padded.size(1)))
            if frame_pad is None:
                return features, [features.size(1)] * len(wavs)
            return features, (~frame_pad).sum(dim=1).tolist()
        counts = self.frame_counts(sizes)
        features = chunked_padded_cnn(cnn, padded, sizes, counts, self._cnn_has_groupnorm)
        if min(counts) < features.size(1):  # frames past a row's end: garbage of the padded pass
            pad = ~valid_frame_mask(torch.tensor(counts, device=features.device), features.size(1))
            features = _zero_frames(features, pad)
        return features, counts

    def hidden_states(self, wavs: List[Tensor], deepest: Optional[int] = None) -> Tuple[List[Tensor], Tensor]:
        """A frozen model's hidden states for a batch, no exits: ``(states, lengths)``.

        ``states[k]`` ``(B, T, D)`` for ``k = 0..deepest`` (default ``L``) with the stock
        upstream's meaning (``states[L]`` of a pre-LN model is final-normed), zeros past each
        row's ``lengths[b]`` valid frames; layers past ``deepest`` are not computed. Call it
        under ``torch.no_grad()`` for a frozen model.
        """
        deepest = self.num_layers if deepest is None else deepest
        out = self.forward(wavs, make_plan([deepest], None))
        return out.hidden_states[: deepest + 1], out.lengths

    def forward(
        self, wavs: List[Tensor], plan: ExitPlan, per_batch: bool = False, branch_input: Optional[str] = None
    ) -> EarlyExitOutput:
        """Run the batch under ``plan``.

        Args:
            wavs: ``B`` 1-D float waveforms at 16 kHz, any lengths.
            plan: where branches are checked and where every row stops.
            per_batch: the authors' release rule, for comparison only: one entropy averaged
                over all valid frames of the batch decides for the whole batch, which runs
                on until it exits together.
            branch_input: also return ``branch_inputs``, the tensors that branches with
                this reading (a key of ``BRANCH_INPUTS``) take at every layer that ran.
        """
        self._check_call(plan, branch_input)
        model = self._run_model()
        first, out_dtype = next(model.parameters()), next(self.model.parameters()).dtype  # out: float32
        wavs = prepare_waveforms(wavs, self.min_samples, first.dtype, first.device)  # core/waveforms.py
        with frozen_forward(self.precision, first.device):
            x, counts, lengths = self._front(wavs, model)
            plain_only = per_batch or branch_input is not None or self.stock_padded_cnn or self.training
            plain_only = plain_only or getattr(self, "_is_replica", False)  # DataParallel: fresh weights each call
            if self._static.applies(self.cuda_graphs, x, plain_only):
                return self._static_forward(wavs, model, x, counts, lengths, plan, out_dtype)
            loop = self._loop(model, x, counts, lengths, plan, per_batch, branch_input, out_dtype)
        return self._assemble(wavs, loop, lengths, plan)

    def _run_model(self) -> nn.Module:
        """The model the forward runs (``bf16-weights``: its copy cast once, :class:`CastCache`)."""
        model, fresh = self._cast.model_for(self.model, self.precision)
        if fresh:  # captured steps read the old copy's weights
            self._static.clear()
        return model

    def _check_call(self, plan: ExitPlan, branch_input: Optional[str]) -> None:
        """One clear line for a plan or a branch input this model cannot run."""
        if not 1 <= plan.deepest <= self.num_layers:
            raise ValueError(f"exit layer {plan.deepest} is outside 1..{self.num_layers}")
        if plan.check_layers and self.branches is None:
            raise ValueError(
                "this checkpoint has no exit branches: train them first with 'daisy train-branches' "
                "(only strategies 'full' and 'fixed' run without branches)"
            )
        if branch_input is not None and branch_input not in BRANCH_INPUTS:
            raise ValueError(f"unknown branch input {branch_input!r}; one of {', '.join(BRANCH_INPUTS)}")
        if "ffn_output" in (self._reads, branch_input) and not self.family.exposes_ffn_output:
            raise ValueError(f"{self.family.name} layers do not return their FFN output (branch input 'ffn_output')")

    @property
    def _reads(self) -> str:
        return self.branches.branch_input if self.branches is not None else "hidden_states"

    def _front(self, wavs: List[Tensor], model: nn.Module) -> Tuple[Tensor, List[int], Tensor]:
        """``hidden_states[0]`` ``(B, T, D)`` in ``model``'s dtype, valid frames (host, device)."""
        if self.normalize_waveform:
            wavs = [F.layer_norm(w, w.shape) for w in wavs]
        features, counts = self._cnn(list(wavs), model)
        lengths = torch.tensor(counts, device=features.device)
        padding = ~valid_frame_mask(lengths, features.size(1))
        x = self.family.front(model, features, padding, stock_batch=self.stock_padded_cnn)
        return x.to(wavs[0].dtype), counts, lengths

    def _loop(
        self,
        model: nn.Module,
        x: Tensor,
        counts: List[int],
        lengths: Tensor,
        plan: ExitPlan,
        per_batch: bool,
        branch_input: Optional[str],
        out_dtype: torch.dtype,
    ) -> LoopState:
        """The plain loop: rows that exit leave the batch (:class:`ExitRows`), the time axis is cut
        to the longest running row, one host read of the decisions per checked layer. ``x`` in
        ``model``'s dtype; what leaves is ``out_dtype``."""
        family, dtype, reads = self.family, x.dtype, self._reads
        batch, frames = x.size(0), x.size(1)
        padded = min(counts) < frames
        running = ExitRows(
            counts, lengths, ~valid_frame_mask(lengths, frames) if padded else None, frames, plan.deepest
        )
        # hidden[k] is layer k's output; while every row is still running at full length it
        # is the layer's own output tensor (no copy), afterwards rows are scattered into zeros
        loop = LoopState([x.to(out_dtype)] + [None] * self.num_layers, [None] * (self.num_layers + 1), running, padded)
        loop.entropies = x.new_full((batch, self.num_layers), float("nan"), dtype=out_dtype)
        final_norm = family.final_norm(model)
        x = F.dropout(x, p=model.encoder.dropout, training=model.encoder.training).transpose(0, 1)  # (T, B, D)
        carry, checks = None, set(plan.check_layers)  # carry: what a layer passes on (WavLM's position bias)
        for k in range(1, plan.deepest + 1):
            x, ffn, carry = family.layer(model, k - 1, x, running.padding, carry)  # (T, B_a, D)
            x, ffn = x.to(dtype), ffn if ffn is None else ffn.to(out_dtype)  # no-ops unless autocast left them low
            output = state = x.transpose(0, 1).to(out_dtype)  # (B_a, T_a, D); bf16-weights: the one cast out
            if k == self.num_layers and final_norm is not None:
                state = final_norm(x.transpose(0, 1)).to(out_dtype)
            loop.last = state
            loop.keep(k, state, output, ffn, branch_input)
            if k == plan.deepest or k not in checks:
                continue
            head = state if reads == "hidden_states" else (output if reads == "layer_output" else ffn.transpose(0, 1))
            stop = self._decide(k, head, running, loop.entropies, plan.tau, per_batch)
            if not any(stop):
                continue
            left, loop.last = running.leave(k, stop, loop.last), None
            if left is None:  # every row has left
                break
            keep, before, longest = left
            x, carry = x[:longest].index_select(1, keep), family.keep_rows(carry, keep, before, longest)
        return loop

    def _decide(
        self, k: int, head: Tensor, running: ExitRows, entropies: Tensor, tau: float, per_batch: bool
    ) -> List[bool]:
        """The check of layer ``k`` on the running rows: their entropies into ``entropies``, and
        which rows stop (the one host read of the layer)."""
        entropy = self.branches.check(k, head, running.weights(self.branches.groups))
        if per_batch:
            frames_now = running.lengths.to(entropy.dtype)
            entropy = ((entropy * frames_now).sum() / frames_now.sum()).expand_as(entropy)
        entropies[:, k - 1].index_copy_(0, running.rows, entropy.to(entropies.dtype))
        return exits(entropy, tau).to("cpu", copy=True).tolist()

    def _assemble(self, wavs: List[Tensor], loop: LoopState, lengths: Tensor, plan: ExitPlan) -> EarlyExitOutput:
        """The plain loop's outputs: zeros for layers no row reached and past each row's frames."""
        exit_hidden = loop.running.finish(loop.last)
        if exit_hidden is None:  # no row left early
            exit_hidden = loop.hidden[plan.deepest]
        batch, frames = exit_hidden.size(0), exit_hidden.size(1)
        padded = loop.padded
        padding = ~valid_frame_mask(lengths, frames) if padded else None
        outputs: List[Tensor] = []
        for h in loop.hidden:
            if h is None:
                h = exit_hidden.new_zeros(batch, frames, exit_hidden.size(-1))
            elif padded:
                h = _zero_frames(h, padding)
            outputs.append(h)
        if padded and exit_hidden is not loop.hidden[plan.deepest]:
            exit_hidden = _zero_frames(exit_hidden, padding)
        elif padded:
            exit_hidden = outputs[plan.deepest]
        check_finite(wavs, outputs)  # the batch's one finiteness check: input and hidden states
        branch_inputs = None
        if loop.kept[1:] != [None] * self.num_layers:
            branch_inputs = [
                h if h is not None else exit_hidden.new_zeros(batch, frames, exit_hidden.size(-1))
                for h in loop.kept[1:]
            ]
        exit_layers = torch.tensor(loop.running.exit_layers, dtype=torch.long, device=lengths.device)
        return EarlyExitOutput(outputs, lengths, exit_layers, loop.entropies, branch_inputs, exit_hidden)

    # -- the static-shape path (CUDA graphs) ------------------------------------------------
    def graph_stats(self) -> Dict[str, int]:
        """The static-shape loop's step caches: group shapes held, captures, replays, evictions."""
        return self._static.stats()

    def _static_forward(
        self,
        wavs: List[Tensor],
        model: nn.Module,
        x: Tensor,
        counts: List[int],
        lengths: Tensor,
        plan: ExitPlan,
        out_dtype: torch.dtype,
    ) -> EarlyExitOutput:
        net = make_net(model, self.family, self.branches, self.num_layers)
        x = x.to(out_dtype)
        run_dtype = next(model.parameters()).dtype
        result = self._static.run(net, x, counts, plan, self._reads, self.cuda_graphs, self.read_ahead, run_dtype)
        outputs = list(result.hidden) + [x.new_zeros(x.shape)] * (self.num_layers - plan.deepest)
        exit_hidden = result.exit_hidden
        if min(counts) < x.size(1):
            padding = ~valid_frame_mask(lengths, x.size(1))
            outputs = [_zero_frames(h, padding) for h in outputs]
            exit_hidden = _zero_frames(exit_hidden, padding)
        check_finite(wavs, outputs)
        return EarlyExitOutput(outputs, lengths, result.exit_layers, result.entropies, None, exit_hidden)

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .half(): captured steps read the old tensors
        self._static.clear()
        self._cast = CastCache()
        return super()._apply(fn, *args, **kwargs)
