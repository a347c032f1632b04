"""`python -m haares`: the same as the `haares` console script."""

from haares.cli.app import main

main()
