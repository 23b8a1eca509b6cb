"""The optional native order-book sides (tapewatch/_sides.c). Everything else is in pyproject.toml.

``optional=True``: on a machine without a C compiler or Python's headers the build of the extension fails
(quietly: ``make`` prints whether it was built) and tapewatch installs without it; tapewatch.book_sides then uses its pure-Python sides, which
give the same results (the book tests run against both), only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tapewatch._sides",
            ["tapewatch/_sides.c"],
            depends=["tapewatch/_native_lines.c"],  # included by _sides.c
            optional=True,
            extra_compile_args=[
                "-O2",
                "-ffp-contract=off",  # no fused multiply-adds: the C sums must be Python's, bit for bit
                "-Wall",
                "-Wextra",
                "-Wno-unused-parameter",
                "-Wno-missing-field-initializers",
            ],
        )
    ]
)
