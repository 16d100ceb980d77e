"""The ``stagecoach`` command line (DESIGN §7): one module per command, wired in main."""
