"""DAISY: data adaptive self-supervised early exit for HuBERT, as an s3prl upstream plugin."""
__version__ = "0.1.0"
