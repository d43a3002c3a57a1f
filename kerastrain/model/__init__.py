"""Model: the Keras GPT, its presets, LoRA, verified weight files, keras-hub generation and
``kerastrain.load``. Imports only the core (``kerastrain.config``, ``errors``, ``plugins``)."""
