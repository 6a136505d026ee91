"""The benchmark of `campaign send` (issue 6): sink, generator, baselines, runner.

Not part of the product: nothing under `campaign/` imports it. Run it with
`python bench/run.py` (see bench/README.md).
"""
