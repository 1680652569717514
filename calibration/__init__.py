"""Noise characterization, the choice of N, and the critical sigma."""
