"""The warehouse: runs as partitioned Parquet, in a folder or on object storage.

Callers open one with `layout.open_warehouse(location)` and use its interface,
`base.Warehouse` (base.py's table says which module holds each kind of store, and where to
add one); paths.py names the folders and files.
"""
