"""Pretraining of the embedded tiny HuBERT (``daisy pretrain-tiny``).

Iteration 1: masked prediction of k-means clusters of MFCC(+delta+delta-delta) frames.
Iteration 2: k-means of the iteration-1 model's middle-layer features, then masked
prediction of those clusters. The model is s3prl's own ``HubertModel``; the result is
written in s3prl's converted HuBERT format (loadable by ``hubert_local``).
"""

from .checkpoint import load_converted, save_converted  # noqa: F401
from .model import TINY_MODEL_CFG, TINY_TASK_CFG, build_model, cluster_symbols  # noqa: F401
