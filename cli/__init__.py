"""The `smeledger` command line (operators and developers): see `cli.main`."""
