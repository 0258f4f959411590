"""The upstream core: everything ``-u daisy_hubert`` needs, and nothing else of ours.

* :mod:`.policy`: the exit rule (tau from rho, spans from exit statistics, :class:`DaisyConfig`);
* :mod:`.branches`: one linear exit branch per layer, per-utterance entropy;
* :mod:`.early_exit`: HuBERT forward that stops each utterance at its exit layer;
* :mod:`.checkpoint`: reading DAISY, authors'-layout and plain converted HuBERT checkpoints;
* :mod:`.expert`: the s3prl ``UpstreamBase`` (``DaisyUpstream``);
* :mod:`.featurizers`: LayerNorm + weighted sum over only the layers that ran, for s3prl's
  runner and for ``s3prl.nn`` side by side.

Modules here import torch and s3prl, never another sub-package of daisy_upstream.
"""
