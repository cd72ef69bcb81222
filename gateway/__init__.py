"""A drop-in OpenAI and Anthropic AI gateway."""

__version__ = "0.1.0"
