"""spark-daemon.sh, done right: pid files, nice levels, rotated logs, backends."""
