from libwatch.cli.app import main

main()
