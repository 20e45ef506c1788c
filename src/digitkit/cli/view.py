"""`digitkit view`: open a model in Netron (thin layer over digitkit.view)."""

from __future__ import annotations

import click


@click.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--port", type=int, default=None,
              help="Port to serve on.  [default: 8080, else 8081, else a free port]")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 127.0.0.1 keeps the model off the network.")
@click.option("--no-browser", is_flag=True,
              help="Do not open a browser (headless machines); just print the URL.")
def command(path, port, host, no_browser):
    """Show the graph of PATH (.h5, .keras, .onnx or a SavedModel directory) in Netron.

    Prints the URL and serves until Ctrl-C.
    """
    from digitkit.view import view_until_interrupted

    if port is not None and not 0 <= port <= 65535:
        raise click.BadParameter(f"{port} is not a port number", param_hint="--port")
    view_until_interrupted(path, port=port, host=host, browse=not no_browser, echo=click.echo)
