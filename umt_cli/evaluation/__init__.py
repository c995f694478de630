"""Evaluation: retrieval and classification metrics, feature extraction, reports."""
