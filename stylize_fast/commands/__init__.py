"""One module per ``stylize-fast`` subcommand (see stylize_fast/cli.py)."""
