"""Wire dialects: each module turns one API's request body into canonical events.

Pure functions: bytes or parsed JSON in, ``IdentifyEvent`` tuples out, or a
``RequestError`` that names the field at fault.
"""
