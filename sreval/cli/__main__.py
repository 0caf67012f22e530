"""`python -m sreval.cli`: the same as the `sreval` command."""

from sreval.cli import main

if __name__ == "__main__":
    main()
