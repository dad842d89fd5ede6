"""gic: the shared VGG16 two-phase transfer-learning trainer (men vs women photos).

The data flow, one call per arrow:

    load_config -> load_dataset -> build_model -> train_two_phase -> evaluate

This package knows nothing of Ray: the search in `tune/` imports it, never the other way round.
"""

__version__ = "0.1.0"
