"""`python -m haares`: the same as the `haares` command."""

from haares.cli.app import main

if __name__ == "__main__":
    main()
