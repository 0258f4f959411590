"""DAISY: data adaptive self-supervised early exit for s3prl's SSL models (HuBERT, wav2vec 2.0,
data2vec, WavLM), as an s3prl upstream plugin.

Importing this package registers ``daisy_hubert`` and ``daisy_<family>_local`` /
``daisy_<family>_custom`` for each family in ``s3prl.hub`` (now if s3prl.hub is imported, else when it is)
and makes s3prl's runner use :class:`daisy_upstream.core.featurizers.DaisyFeaturizer`. It imports
neither torch nor s3prl itself.

Layout: the plugin is two sub-packages; everything else is a tool that s3prl never loads
(``tests/integration/test_plugin_footprint.py`` checks it).

The plugin (what ``-u daisy_*``, ``S3PRLUpstream`` and ESPnet's frontend load):

* ``core``: the early-exit upstream, its branches, exit policy, checkpoint format and
  featurizers; imports nothing else of ours.
* ``integration``: the glue to s3prl: hub entries, registration hooks, the compatibility
  shims, the opt-in exact resume, and running / reading s3prl's runner.

The tools (the ``daisy`` commands; loaded only by them):

* ``training``: stage 1 (exit branches), calibration, k-means targets.
* ``evaluation``: bench, noise report, the mixed set, Table 1's reproduction.
* ``leaderboard``: the SUPERB kit: MACs profile, hidden-set export, ``predict.zip``, scores.
* ``factory``: the embedded model's making: a synthetic corpus and the tiny HuBERT's pretraining.
* ``audio``, ``outputs``, ``atomic``: what the tools share (reading audio, owning output folders,
  atomic writes); ``cli``: the thin ``daisy`` command adapters; ``testing``: makers of tiny
  models, audio and s3prl layouts for the tests (the library never imports it).
"""

from daisy_upstream.integration.plugin import install as _install

__version__ = "0.1.0"

_install()
