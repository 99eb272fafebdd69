"""The staged, resumable reproduction of the whole paper (`reproduction`, its stages in `stages`) and its
report.md (`report`). The top of the package: it may import every other layer; nothing imports it."""
