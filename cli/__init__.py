"""The `clo-mlx` command line (Typer). Thin: each command parses, then calls `clo_mlx`."""
