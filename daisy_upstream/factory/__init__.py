"""The embedded model's factory: synthetic corpora (``corpus``), tiny HuBERT pretraining
(``pretrain``) and random-weight HuBERT checkpoints of any size (``random_hubert``)."""
