from orchestra_schema.cli import main

main()
