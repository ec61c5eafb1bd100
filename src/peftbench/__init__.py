"""peftbench: which parameter-efficient fine-tuning method should my text classifier use, and at what cost?"""

__version__ = "0.1.0"
