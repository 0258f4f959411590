"""The embedded model's factory: synthetic corpora (``corpus``) and tiny HuBERT pretraining
(``pretrain``)."""
