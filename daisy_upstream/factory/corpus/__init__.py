"""Synthetic speech corpora in the four s3prl task layouts (``daisy make-corpus``).

Main entry points:

* :func:`make_corpus` - synthesise speech (espeak-ng, flite) and write the ASR, SID, SE
  and SS layouts, noisy test copies and real recordings, with a ``corpus.json`` manifest.
* :func:`mix_at_snr` / :func:`measure_snr` - exact-SNR mixing in numpy.
* :func:`generate_sentences` - the self-written sentence grammar.
"""

from daisy_upstream.audio.noise import measure_snr, mix_at_snr, sox_noise

from .build import TASKS, make_corpus
from .text import generate_sentences

__all__ = ["make_corpus", "TASKS", "mix_at_snr", "measure_snr", "sox_noise", "generate_sentences"]
