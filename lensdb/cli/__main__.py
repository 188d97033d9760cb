from lensdb.cli import main

main()
