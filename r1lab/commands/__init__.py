"""One module per `r1lab` command; each exposes HELP, Config and run(cfg)."""
