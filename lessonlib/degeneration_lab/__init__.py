"""The command-line program of lesson 08's experiment; the code it runs is in
`lessonlib.analysis.degeneration_table`."""
