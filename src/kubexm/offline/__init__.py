"""Air-gapped installs: the image list a cluster file needs, and one bundle file with everything in it.

``images`` computes what nodes pull, ``fetch`` collects binaries, packages, images, charts and wheels into a
resumable work directory, ``bundle`` writes and checks the bundle (a tar with ``manifest.yaml``), ``debs``
resolves Debian packages with their dependencies in a private apt state.
"""
