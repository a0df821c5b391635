"""Other trainers' and pipelines' interfaces on ltx2train (DiffSynth-Studio's)."""
