"""DAISY: data adaptive self-supervised early exit for HuBERT, as an s3prl upstream plugin.

Importing this package registers ``daisy_hubert``, ``daisy_hubert_local`` and
``daisy_hubert_custom`` in ``s3prl.hub`` (now if s3prl.hub is imported, else when it is)
and makes s3prl's runner use :class:`daisy_upstream.core.featurizer.DaisyFeaturizer`. It imports
neither torch nor s3prl itself.
"""
from daisy_upstream.integration.plugin import install as _install

__version__ = "0.1.0"

_install()
