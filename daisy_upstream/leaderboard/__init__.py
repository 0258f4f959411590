"""SUPERB leaderboard kit: what a submission needs, for an early-exit upstream.

* :mod:`.profile` (+ :mod:`.macs`, :mod:`.buckets`): MACs per utterance at batch 1, DAISY vs the
  full model, in the web form's buckets (``daisy profile``);
* :mod:`.submit`: the public set's ``predict.zip`` from s3prl runner experiment folders
  (``daisy submit``);
* :mod:`.export_hidden` (+ :mod:`.expert_template`, :mod:`.hidden_checks`): the hidden set's
  ``expert.py`` + ``model.pt`` folder, checked like the template (``daisy export-hidden``);
* :mod:`.superb_score`: the SUPERB score and Score-P (``daisy superb-score``).
"""
