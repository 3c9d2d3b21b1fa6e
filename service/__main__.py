"""`python -m service`: the `qingbo-gateway` command (service/cli/main.py)."""

from service.cli.main import main

if __name__ == "__main__":
    main()
