"""Entry point: `python run.py [overrides]` (same as the `memsig` command)."""

from memsig.cli import main

if __name__ == "__main__":
    main()
