"""`python -m deployer`."""

from deployer.cli import main

if __name__ == "__main__":
    main()
