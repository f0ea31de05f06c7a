"""``python -m hdn_deploy`` is the ``hdn-deploy`` command."""
from .cli.main import main

if __name__ == "__main__":
    main()
