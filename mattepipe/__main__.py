"""`python -m mattepipe …`: the same command line as `mattepipe …`."""

from mattepipe.cli.main import main

if __name__ == "__main__":
    main()
