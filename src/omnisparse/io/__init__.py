"""The low I/O layer every other layer may use; it imports nothing of omnisparse but the package root
(``__version__``) and :mod:`omnisparse.errors`.

* :mod:`.atomic`      atomic (temporary file + fsync + rename) writes, fsync helpers, sha256 of files
                      and the check of a directory against its recorded digests;
* :mod:`.json_file`   reading a JSON file that must hold an object, with one-line errors, and the
                      digest of a JSON object's own content (what state files carry);
* :mod:`.lock`        one writer per directory: ``.omnisparse.lock``, held for a command's lifetime;
* :mod:`.checkpoint`  the training checkpoint directory (``RUN/ckpt-<step>/``): write, verify, read;
* :mod:`.export_dir`  the on-disk format of an exported sub-network directory (file names,
                      ``meta.json`` kind / version, its checksummed verification).
"""
