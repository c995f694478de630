"""Data-set preparation behind `umt prepare-data`: synthetic, kinetics710, video-text."""
