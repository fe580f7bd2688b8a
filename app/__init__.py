"""LayerScope desktop app and CLI (import as layerscope.app)."""
