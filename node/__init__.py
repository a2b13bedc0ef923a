"""creditnet's node daemon: all I/O (libp2p, LevelDB, HTTP, metrics, CLI) on trio."""
