"""``python -m mlflow_xai.cli``: the command line."""

from mlflow_xai.cli.commands import entry

if __name__ == "__main__":
    entry()
