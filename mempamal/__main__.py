"""``python -m mempamal`` is the ``mempamal`` command."""

from .cli import main

if __name__ == "__main__":
    main()
