"""The `tuner` command line: its commands, terminal views, and the composition of
`tuner serve` and `tuner worker`."""
