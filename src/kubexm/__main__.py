from kubexm.cli.main import main

main()
