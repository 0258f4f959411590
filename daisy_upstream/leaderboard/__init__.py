"""SUPERB leaderboard kit: compute profile, public-set predict.zip, hidden-set export, SUPERB score."""
