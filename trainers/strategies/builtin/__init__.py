"""The built-in strategies, one file each; importing this package registers them in the order
of :data:`MODULES` (the order of tables, plots and ``--help``)."""

import importlib

MODULES = ("none", "mixup", "nonlinear_mixup", "batchmixup", "tmix", "embed_mixup")

for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")
