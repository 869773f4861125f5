"""imagebot core: everything that is the same on every chat platform."""

__version__ = "0.1.0"
