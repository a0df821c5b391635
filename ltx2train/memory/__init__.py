"""Trading speed for memory: FP8 storage of frozen weights, block swap, activation offload, VAE tiling (what a recipe
needs is worked out in ``analysis/``)."""
