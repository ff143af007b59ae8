"""The Gradio demo app (`tokenprune demo`) and runnable examples; installed as `tokenprune.demos`."""
