"""Small helpers that every part of dcnn may use and that import nothing else of dcnn:
atomic safetensors files (``files``) and argument checks (``checks``)."""
