"""Test helpers and fakes: never imported by ``bincount`` and never shipped in a training
bundle or a model archive."""
