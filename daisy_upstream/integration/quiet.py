"""Third-party messages a ``daisy`` user cannot act on, kept out of our commands' output.

Each filter is narrow: one message, one category (or one logger), from a library we pin.
Everything else, our own warnings included, still shows.

* torchaudio 2.8's ``set_audio_backend`` deprecation (UserWarning), raised when s3prl 0.4.18
  imports its upstreams (``byol_a/common.py``) and in ``run_downstream.py``;
* torchaudio 2.8's "In 2.9, this function's implementation will be changed to use
  torchaudio.load_with_torchcodec" (UserWarning), raised by s3prl's datasets at every
  ``torchaudio.load``;
* torch 2.8's ``torch.nn.utils.weight_norm`` FutureWarning, raised when s3prl's HuBERT
  builds its positional convolution;
* s3prl's "ESPnet is not installed, cannot use espnet_hubert upstream" (a logger warning of
  ``s3prl.upstream.espnet_hubert.expert`` at import; that upstream is not ours to use).
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_third_party"]

_WARNINGS = (
    (r"torchaudio\._backend\.set_audio_backend has been deprecated", UserWarning),
    (r"In 2\.9, this function's implementation will be changed to use torchaudio\.load_with_torchcodec", UserWarning),
    (r"`torch\.nn\.utils\.weight_norm` is deprecated", FutureWarning),
)
_ESPNET_LOGGER = "s3prl.upstream.espnet_hubert.expert"
_ESPNET_MESSAGE = "ESPnet is not installed"


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_third_party() -> None:
    """Install the filters (idempotent). Call before s3prl / torchaudio are imported."""
    for message, category in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    logger = logging.getLogger(_ESPNET_LOGGER)
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage(_ESPNET_MESSAGE))
