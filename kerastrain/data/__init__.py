"""Data: sources (the plugin interface, the embedded corpus), tokenizers, vocabulary-size search,
and the streaming pipeline that packs tokens for training. Imports only the core (kerastrain.*)."""
