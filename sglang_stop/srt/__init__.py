"""Code that runs inside an SGLang server: the plugin (radix namespace, /stop/score) and the converter."""
