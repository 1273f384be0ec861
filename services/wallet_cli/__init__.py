"""``wallet``: one command line for every operator task, each delegating to the module that
does the work (see ``docs/deployment.md`` and ``wallet --help``)."""
