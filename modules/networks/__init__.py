"""Extra networks: LoRA, textual inversion, VAE: find them, load them, apply them for one job, remove them."""
