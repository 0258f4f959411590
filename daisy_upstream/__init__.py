"""DAISY: data adaptive self-supervised early exit for s3prl's SSL models (HuBERT, wav2vec 2.0,
data2vec, WavLM), as an s3prl upstream plugin.

Importing this package registers ``daisy_hubert`` and ``daisy_<family>_local`` /
``daisy_<family>_custom`` for each family in ``s3prl.hub`` (now if s3prl.hub is imported, else when it is)
and makes s3prl's runner use :class:`daisy_upstream.core.featurizers.DaisyFeaturizer`. It imports
neither torch nor s3prl itself.
"""

from daisy_upstream.integration.plugin import install as _install

__version__ = "0.1.0"

_install()
