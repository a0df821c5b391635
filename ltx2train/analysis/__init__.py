"""What a recipe costs, worked out without weights or data: fake-tensor model builds (``fake``), token counts
(``tokens``), weight bytes (``weights``), the activation simulation (``simulate``), the per-GPU memory estimate
(``estimate``, ``report``) and the model-FLOP counter (``flops``). Built on ``models``, ``data`` and ``memory``;
training and the CLI read it, it never reads them."""
