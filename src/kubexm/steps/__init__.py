"""Steps by domain: ``common`` (commands, files, units), ``preflight``, and later etcd, os, ..."""
