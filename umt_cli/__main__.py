"""`python -m umt_cli` is `umt`; torchrun and `accelerate launch -m umt_cli` rely on it."""

from umt_cli.cli.app import main

if __name__ == "__main__":
    main()
