"""SNGAN trainer that measures what spectral normalization does to each discriminator layer."""
