"""kerastrain plugin (work in progress)."""
