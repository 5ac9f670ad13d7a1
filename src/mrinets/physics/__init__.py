"""MR physics: dipole field model, phase unwrapping, background removal, inversion, diffusion signals, sampling."""
