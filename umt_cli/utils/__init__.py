"""Small helpers shared by stages and data preparation."""
