"""ltx2train: distributed fine-tuning for Lightricks' LTX-2 audio-video diffusion models."""

import logging

# bitsandbytes (imported by PEFT whenever it is installed) warns on CPUs with AVX512-BF16 that an optional package
# of 4-bit CPU kernels is missing; ltx2train runs no 4-bit matmuls, so the warning would only be noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
