"""The network: ``DCNNetwork`` (build, compile, fit, evaluate, predict, state), its losses,
optimisers and fit callbacks, the JSON spec of a whole network, and the model presets."""
