"""Phone app bundles: artifacts -> one app-ready folder (+ zip) with one `bundle.json`.

- contract.py: the manifest keys, file names and IO names the apps read (one place)
- bundle.py:   `handheld bundle --target android|ios --out DIR ARTIFACT...`
- verify.py:   `handheld verify BUNDLE` (JSON Schema, checksums, every named file present)
- schema/:     bundle.schema.json and bench.schema.json
"""
