"""Measuring DAISY: upstream timing (bench), the noise report, and the paper's Table 1."""
