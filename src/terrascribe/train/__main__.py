"""``python -m terrascribe.train ARGS`` = ``terrascribe train ARGS``; the form torchrun runs::

torchrun --nproc_per_node 4 -m terrascribe.train --data ds/ --model ViT-B-32 --out runs/x
"""

from __future__ import annotations

import typer

from terrascribe.cli.train import train_command


def main() -> None:
    """Run the ``train`` command alone."""
    typer.run(train_command)


if __name__ == "__main__":
    main()
