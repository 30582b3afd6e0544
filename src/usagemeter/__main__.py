"""`python -m usagemeter` runs the CLI."""

from usagemeter.cli import app

app()
