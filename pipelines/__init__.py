"""The thinkpipe DAG(s) and the `thinkpipe` command line."""
