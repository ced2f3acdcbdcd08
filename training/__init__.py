"""Nightly training: ordinal (GNOLR and baselines) and retrieval models, their data, metrics and evaluation."""
