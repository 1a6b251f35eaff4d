"""The `fibrobench` subcommands, one module each (`NAME`, `HELP`, `add_arguments(parser)`, `main(args) -> int`)."""
