"""The `xmodal` command: one entry point whose subcommands live with the package that owns them."""
