"""The ``kubexm`` command line: verb-noun commands, thin over ``kubexm.api``."""
