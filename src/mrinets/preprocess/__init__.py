"""Preprocessing shared by pipelines: masks, intensity normalisation, resampling, registration."""
