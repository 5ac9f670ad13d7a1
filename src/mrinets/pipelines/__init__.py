"""The five pipelines; each exposes Config, train(), predict() -> Result, evaluate()."""
