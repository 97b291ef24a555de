"""`python -m adaptscope.cli ...`: the same application as the `adaptscope` command."""

from adaptscope.cli import app

if __name__ == "__main__":
    app()
