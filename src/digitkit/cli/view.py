"""`digitkit view`: open a model in Netron (thin layer over digitkit.view)."""

from __future__ import annotations

import click

from digitkit.cli.conventions import convention_options, take_convention_flags


@click.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--port", type=int, default=None,
              help="Port to serve on.  [default: 8080, else 8081, else a free port]")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 127.0.0.1 keeps the model off the network. Requests "
                   "must name this address (or localhost) and the port in their Host header.")
@click.option("--no-browser", is_flag=True,
              help="Do not open a browser (headless machines); just print the URL.")
@convention_options
def command(path, port, host, no_browser, **conventions):
    """Show the graph of PATH (.h5, .keras, .onnx or a SavedModel directory) in Netron.

    Prints the URL and serves until Ctrl-C: Netron's app and the model's own files
    (ONNX external data, SavedModel variables), nothing else of its folder, and a page
    that loads nothing from anywhere but this server. For a model made elsewhere it also says
    which input convention it has, where the --input-* flags or the metadata of
    digitkit's adapter give it.
    """
    from digitkit.view import convention_note, view_until_interrupted

    if port is not None and not 0 <= port <= 65535:
        raise click.BadParameter(f"{port} is not a port number", param_hint="--port")
    note = convention_note(path, take_convention_flags(conventions))
    if note:
        click.echo(note)
    view_until_interrupted(path, port=port, host=host, browse=not no_browser, echo=click.echo)
