from orchestra_schema.entry import run

run()
