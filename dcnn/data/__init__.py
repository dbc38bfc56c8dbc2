"""Data coming in: the built-in datasets, your own image folders and arrays, image decoding.

``dcnn.datasets`` (``dcnn.data.datasets``) is the front door: ``load(name_or_path)``.
"""
