"""Topics, message schemas and codecs: the engine's wire contracts."""
