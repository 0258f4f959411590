"""Audio in and out for every tool: reading (16 kHz mono, problems counted), atomic writing,
audio sets (splits, batches), and noise mixing at an exact SNR."""
