"""Options more than one command takes, declared once."""

from __future__ import annotations

import click

#: export, infer and bench: the opt-in past digitkit.model.safety's rule for each format.
trust_model_option = click.option(
    "--trust-model", is_flag=True,
    help="Run a model that can do more than compute: a Keras file with Lambda or custom "
         "layers (they run Python code), a SavedModel whose graph reads or writes files or "
         "runs anything but tensor ops. Only for a model whose source you trust.")
