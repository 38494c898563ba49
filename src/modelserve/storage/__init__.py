"""Where model versions live when the base path is a URL: object storage listed remotely, served locally.

``remote`` lists and downloads a model's versions through fsspec (s3fs for ``s3://``, an optional extra),
``cache`` keeps the downloaded copies the runtimes load, and ``repository`` joins them behind the
source's ``VersionRepository`` seam, so the source polls object storage like a local base path.
"""
