"""Accuracy-vs-budget evaluation of pruners (`tokenprune eval vlm|lm`)."""
