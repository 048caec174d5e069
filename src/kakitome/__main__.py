"""`python -m kakitome` runs the CLI."""

from kakitome.cli.main import main

main()
