from evergreen.cli import main

main()
