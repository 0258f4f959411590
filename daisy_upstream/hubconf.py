"""s3prl hub entries, at the import path s3prl users know (``daisy_upstream.hubconf``).

The entries live in :mod:`daisy_upstream.integration.hubconf`; this module only re-exports them.
"""

from daisy_upstream.integration.hubconf import (  # noqa: F401
    DEFAULT_CHECKPOINT,
    daisy_data2vec_custom,
    daisy_data2vec_local,
    daisy_hubert,
    daisy_hubert_custom,
    daisy_hubert_local,
    daisy_wav2vec2_custom,
    daisy_wav2vec2_local,
    daisy_wavlm_custom,
    daisy_wavlm_local,
)

__all__ = [
    "DEFAULT_CHECKPOINT",
    "daisy_data2vec_custom",
    "daisy_data2vec_local",
    "daisy_hubert",
    "daisy_hubert_custom",
    "daisy_hubert_local",
    "daisy_wav2vec2_custom",
    "daisy_wav2vec2_local",
    "daisy_wavlm_custom",
    "daisy_wavlm_local",
]
