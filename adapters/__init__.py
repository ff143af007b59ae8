"""Integrations of tokenprune with model and serving libraries (installed as `tokenprune.adapters`)."""
