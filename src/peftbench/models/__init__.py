"""Pretrained models: loading a classifier and its tokenizer (classifier.py), the bundled e5-small-offline
(offline.py), saving and loading what a run trained (saved.py), and a fix for peft on newer transformers
(compat.py)."""
