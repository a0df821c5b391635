"""Trading speed for memory: FP8 storage of frozen weights, block swap, activation offload, the estimator."""
