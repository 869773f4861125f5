"""Benchmarks that print figures (last line JSON). Run them as modules from the repository root, e.g.
`python -m benchmarks.core`, so they import the bot and the fakes (tests/fakes) as packages."""
