"""The torch backend: the FastLIC modules themselves (CPU; CUDA with float16 and CUDA
graphs), in :mod:`.engine`."""
