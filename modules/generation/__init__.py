"""The generation core: the typed request, its one validator, and running it on a loaded model."""
