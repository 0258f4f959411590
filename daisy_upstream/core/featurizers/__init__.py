"""DAISY's featurizers, one per s3prl API, side by side; both compute, per utterance, a
LayerNorm + softmax-weighted sum over only the layers it ran (:mod:`.weighted_sum`) and count
where training utterances exited (the statistics the upstream's span comes from).

* :mod:`.runner`: :class:`DaisyFeaturizer`, for the runner's ``s3prl.upstream.interfaces.Featurizer``
  (``run_downstream.py``);
* :mod:`.s3prl_nn`: ``DaisyNNFeaturizer``, for ``s3prl.nn.Featurizer`` (``S3PRLUpstream``:
  s3prl's problem recipes, ESPnet), made from s3prl's class when s3prl.nn is imported.

For any other upstream each behaves exactly like the s3prl class it replaces.
"""

from daisy_upstream.core.featurizers.runner import DaisyFeaturizer

__all__ = ["DaisyFeaturizer"]
