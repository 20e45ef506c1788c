from digitkit.cli import main

main()
