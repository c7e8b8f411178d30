"""`python -m webhook` runs the imagegate CLI."""

from webhook.cli import main

main()
