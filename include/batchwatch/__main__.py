from batchwatch.cli import main

main()
