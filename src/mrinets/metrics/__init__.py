"""Evaluation measures for segmentations, images, susceptibility maps and diffusion parameters."""
