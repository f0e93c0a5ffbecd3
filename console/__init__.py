"""The tenant console's pages: accounts, overview, members, keys, audit, settings,
deployments and usage; the `up`, `seed_demo` and `test` commands; the stylesheet."""
