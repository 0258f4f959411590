"""Test-data makers (as lhotse keeps ``lhotse.testing``): random checkpoints, the authors'
release layout, generated audio and SUPERB task layouts with s3prl's runner on them.

Tests import them from here, never from another test module; ``daisy bench`` times a random
Base of any family from :func:`make_random_family_checkpoint`.
:mod:`daisy_upstream.testing.superb` is imported on its own (it is only for end-to-end runs).
"""

from daisy_upstream.testing.audio import speechlike, varied_waves, waves, write_wav, write_wavs
from daisy_upstream.testing.checkpoints import ABSENT, authors_layout, make_random_checkpoint, sharpen_branches
from daisy_upstream.testing.exits import assert_exits_independent_of_batch_mates, spread_plan
from daisy_upstream.testing.families import BASE_SIZES, FAMILY_VARIANTS, make_random_family_checkpoint
from daisy_upstream.testing.syncs import HostSyncCounter, assert_one_host_read_per_checked_layer

__all__ = [
    "ABSENT",
    "BASE_SIZES",
    "FAMILY_VARIANTS",
    "HostSyncCounter",
    "assert_exits_independent_of_batch_mates",
    "assert_one_host_read_per_checked_layer",
    "authors_layout",
    "make_random_checkpoint",
    "spread_plan",
    "make_random_family_checkpoint",
    "sharpen_branches",
    "speechlike",
    "varied_waves",
    "waves",
    "write_wav",
    "write_wavs",
]
